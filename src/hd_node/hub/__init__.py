"""The hub: sessions (one per peer, every link driver), the connector and its join
ladder, trust, peers and presence, pairing, reconnecting, the tab bus. It knows links only
through ``transports.seam`` and nothing of the features, discovery or the web above it."""
