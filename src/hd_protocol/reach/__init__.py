"""Other ways to reach a peer, without their I/O: LAN discovery (SPEC 8.5) and WebRTC
data-channel links (SPEC 8.4). STUN, which both the node and these use, is
``hd_protocol.stun``."""
