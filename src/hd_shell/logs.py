"""Whose name the kit's log lines carry.

The kit (HTTP server, WebSocket link, inbound budget) runs inside three binaries; an
operator reading ``hd-relay``'s log should see ``hd_relay.http``, not a name of the kit.
A binary calls :func:`own_logs` at the top of its trio main; every task started from
there on inherits it (trio copies the context at spawn), so the kit's modules log under
``<owner>.<part>``. Code run outside any binary (a test driving the kit alone) logs as
``hd_shell.<part>``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

_OWNER: ContextVar[str] = ContextVar("hd_shell_log_owner", default="hd_shell")


def own_logs(owner: str) -> None:
    """The calling task and every task it starts from now on log the kit's lines as
    ``owner.<part>`` (``hd_relay.http``)."""
    _OWNER.set(owner)


def logger(part: str) -> logging.Logger:
    """The logger for the kit's ``part`` (``http``, ``ws``) in the task that asks."""
    return logging.getLogger(f"{_OWNER.get()}.{part}")


def configure(level_name: str) -> None:
    """A server binary's log setup: one line per record, ``level_name`` (``INFO``, ...).
    asyncio's own debug chatter (the loop the NATS client runs on) is not ours: it stays
    at INFO and above."""
    level = getattr(logging, level_name.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("asyncio").setLevel(max(level, logging.INFO))


__all__ = ["configure", "logger", "own_logs"]
