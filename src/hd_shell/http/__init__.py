"""HTTP/1.1 on h11: request/response types, one connection, the listener."""
