"""hd-lobby: the lobby server (SPEC 7) with its bundled relay, a thin trio shell around
``hd_protocol.brokers.lobby.LobbyServer`` and ``hd_protocol.brokers.relay.RelayServer``."""

__version__ = "0.1.0"
