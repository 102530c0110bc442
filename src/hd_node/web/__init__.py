"""The local face of the node: the HTTP app (page, /api, /healthz, /metrics), tab
sessions over /ws, and the command table both of them serve."""
