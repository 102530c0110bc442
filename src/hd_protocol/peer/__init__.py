"""Two nodes and one link (SPEC 2-5, 6.4, 8.1): admission and invites, the handshake and
its frames, the session pipeline, ``Connection`` (a link's whole life), the candidates a
peer is reached at, the address book, the policies around sessions and the monitor's
figures. Everything above (features, brokers, other carriers) builds on this."""
