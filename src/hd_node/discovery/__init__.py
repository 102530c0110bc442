"""How peers find us and we them: the lobby link, LAN (mDNS), our own addresses and STUN."""
