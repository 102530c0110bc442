"""What runs on a session (SPEC 6, 9): collaborative panes and their tabs, the rebase of
a rejected edit, peer chat, agent requests, the browser socket frame and the one table
of commands a tab or the CLI may send."""
