"""Which of several URLs of one service to use, and how long to wait before the next try.

``lobbyUrl`` and ``relayUrl`` may name several instances of one lobby or relay (issue
19: they share their state over NATS). A node uses one at a time: the first, and when
its connection there drops or a dial fails, the next one, round robin. Between two URLs
of one round the wait is short (``SWITCH_MS``, jittered), so a node whose instance died
is back on another within a second; after a whole round of failures it is the usual
backoff (SPEC 5: 1 s doubling to 60 s), so a node never hammers a service that is down.
A node that got through stays where it is: nothing moves it back to the first URL.

With one URL this is exactly the backoff the node always had: ``reconnect_delay_ms`` of
the failures since the last good connection.

Pure: no clock, no I/O; randomness only the injected ``rng`` (the jitter). The lobby
link and the relay attachments are its shells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hd_protocol import reconnect_delay_ms

SWITCH_MS = 500  # the wait before the next URL of a round: 250..500 ms


class Failover:
    """The URLs of one service, the one in use (``current``), and the failures since the
    last good connection."""

    def __init__(self, urls: Sequence[str], rng: Callable[[int], bytes], *,
                 start: str | None = None, switch_ms: int = SWITCH_MS) -> None:
        """``start``: begin at this URL when it is one of ``urls`` (a node that moved
        to another instance stays there when the list is read again)."""
        if not urls:
            raise ValueError("a failover needs at least one URL")
        self.urls = tuple(urls)
        self.rng = rng
        self.switch_ms = switch_ms
        self.index = self.urls.index(start) if start in self.urls else 0
        self.failures = 0

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def up(self) -> None:
        """The connection at ``current`` is good (registered, attached): the next
        failure starts a new round from here."""
        self.failures = 0

    def lost(self) -> int:
        """The connection at ``current`` ended, or never came: ``current`` moves to the
        next URL; the answer is how long to wait (ms) before dialling it."""
        self.failures += 1
        self.index = (self.index + 1) % len(self.urls)
        rounds, within = divmod(self.failures, len(self.urls))
        if within:
            return reconnect_delay_ms(0, self.rng, base_ms=self.switch_ms)
        return reconnect_delay_ms(rounds - 1, self.rng)

    def move_to(self, url: str) -> bool:
        """Use ``url`` from now on (one of ``urls``: the lobby we follow moved); False
        when it is not one of them or already current."""
        if url not in self.urls or url == self.current:
            return False
        self.index = self.urls.index(url)
        self.failures = 0
        return True


def relay_beside(lobby_url: str) -> str | None:
    """The relay bundled with a lobby: ``/relay-ws`` beside its ``/lobby-ws``."""
    url = lobby_url.rstrip("/")
    return url[: -len("/lobby-ws")] + "/relay-ws" if url.endswith("/lobby-ws") else None


def relay_urls_for(relay_urls: Sequence[str], lobby_url: str | None,
                   lobby_urls: Sequence[str]) -> list[str]:
    """Our own relay's instances, the one to use now first: ``relayUrl`` as given (the
    relay transport fails over among them by itself), else the relays beside the
    instances of our lobby, the one beside the lobby we are on (``lobby_url``) first."""
    if relay_urls:
        return list(relay_urls)
    lobbies = [lobby_url] if lobby_url else []
    lobbies += [u for u in lobby_urls if u != lobby_url]
    return list(dict.fromkeys(r for u in lobbies if (r := relay_beside(u)) is not None))
