"""WebRTC (SPEC 8.4): the transport, its data-channel link, the aiortc peer, and the
one asyncio thread aiortc runs on."""
