"""WebSocket on wsproto: the inbound budget, the dialler and the link."""
