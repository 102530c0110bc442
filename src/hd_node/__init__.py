"""hd_node — the node binary: a thin trio shell around hd_protocol.

It moves bytes (HTTP/WebSocket listeners, peer links), fires timers, persists
(SQLite) and serves the browser UI. Protocol decisions live in hd_protocol.
"""

__version__ = "0.1.0"
