"""Errors the node's shell reports to tabs and the CLI."""

from __future__ import annotations


class HubError(Exception):
    """A request to the hub failed; ``code`` goes to the tab or CLI."""

    def __init__(self, code: str, message: str = "", *, refused: bool = False) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code
        self.refused = refused  # the peer itself said no (auth_result ok:false)
