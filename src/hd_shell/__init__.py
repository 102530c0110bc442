"""hd_shell: the trio plumbing two or more of the binaries share.

Clock, open-file limit, the ``Link`` seam, the HTTP/1.1 server (``hd_shell.http``) and
the WebSocket link with its inbound budget and dialler (``hd_shell.ws``). It imports
``hd_protocol`` only; ``hd_node``, ``hd_lobby`` and ``hd_relay`` build on it.
"""
