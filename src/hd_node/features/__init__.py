"""What runs on the sessions: panes and chat (``collab``), agents and their backends."""
