"""Exceptions raised by the SDK."""

from __future__ import annotations


class TetherError(Exception):
    """The client stopped for a reason retrying cannot fix (see ``close_rules``)."""

    def __init__(self, message: str, code: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.error_code = error_code


class TetherClosed(TetherError):
    """The client is closed (by ``close()`` or because it stopped)."""


class AuthError(TetherError):
    """No usable access token: the token was refused and could not be renewed."""


class MessageRejected(TetherError):
    """The server refused a message for good (e.g. ``too_long``); it is not resent."""
