"""The two servers of the fabric, both sides of each (SPEC 7): the lobby (registration,
presence, rooms, signaling) and its client, the relay broker (store and forward) and its
client, the frame codec they share and the room record."""
