"""hd-relay: the standalone relay broker (SPEC 7.7), a thin trio shell around
``hd_protocol.relay.RelayServer``. Its pieces are shared with hd-lobby, which bundles a
relay beside its lobby."""

__version__ = "0.1.0"
