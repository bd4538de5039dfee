"""The refusals services raise: each `code` is the protocol's error code (docs/protocol.md)."""

from __future__ import annotations


class ServiceError(Exception):
    """Base for expected refusals; `code` is the protocol's error code."""

    code = "error"


class ConversationNotFound(ServiceError):
    code = "not_found"


class ConversationForbidden(ServiceError):
    code = "forbidden"


class Unauthenticated(ServiceError):
    """The user is unknown or deactivated, or the token's sign-in was revoked."""

    code = "unauthenticated"


class LeaseLost(ServiceError):
    """The run's fencing token moved on: another node owns it now."""

    code = "lease_lost"


class RunCancelled(ServiceError):
    code = "cancelled"
