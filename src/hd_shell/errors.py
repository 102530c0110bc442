"""Small helpers every binary needs to turn what went wrong into one line: the
exception a trio nursery wrapped in groups, and a host as it reads inside a URL."""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


def find(exc: BaseException, kind: type[E], *, alone: bool = False) -> E | None:
    """``exc`` itself, or the first ``kind`` inside the exception groups trio wrapped it
    in (depth first); ``alone``: only through groups that hold nothing else, so that a
    failure beside others is not taken for the whole story."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        if alone and len(exc.exceptions) != 1:
            return None
        for sub in exc.exceptions:
            found = find(sub, kind, alone=alone)
            if found is not None:
                return found
    return None


def url_host(host: str) -> str:
    """``host`` as it is written in a URL or a Host header: an IPv6 address in
    brackets (once), anything else as it is."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
