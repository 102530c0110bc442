"""The node's transports behind one seam (``seam``: Link, Transport, the inbound gate):
direct WebSocket (and its ``lan`` kind), the relay, WebRTC. Nothing here knows the hub."""
