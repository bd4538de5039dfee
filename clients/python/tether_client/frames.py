"""Builders of the client frames of protocol v1 (the contract: docs/protocol.md in the repository)."""

from __future__ import annotations

from typing import Any


def connect_frame(token: str, conversation_id: str | None, last_seq: int | None, client_id: str) -> dict[str, Any]:
    return {
        "type": "connect",
        "token": token,
        "conversation_id": conversation_id,
        "last_seq": last_seq,
        "client_id": client_id,
    }


def message_frame(client_msg_id: str, text: str) -> dict[str, Any]:
    return {"type": "message", "client_msg_id": client_msg_id, "text": text}


def ack_frame(seq: int) -> dict[str, Any]:
    return {"type": "ack", "seq": seq}


def ping_frame(ping_id: int) -> dict[str, Any]:
    return {"type": "ping", "id": ping_id}


def refresh_with_token_frame(refresh: str) -> dict[str, Any]:
    """`auth.refresh` with a SimpleJWT refresh token: the server rotates it and answers
    `auth.refreshed` with a new access and refresh token."""
    return {"type": "auth.refresh", "refresh": refresh}


def refresh_with_access_frame(access: str) -> dict[str, Any]:
    """`auth.refresh` with a new access token of the same user (obtained elsewhere)."""
    return {"type": "auth.refresh", "access": access}


def cancel_frame(run_id: str) -> dict[str, Any]:
    return {"type": "cancel", "run_id": run_id}


# The decisions of `approval.respond`.
APPROVAL_DECISIONS = ("approve", "deny")


def approval_respond_frame(call_id: str, decision: str) -> dict[str, Any]:
    """A person's decision on a call waiting for approval (`approval.requested`)."""
    if decision not in APPROVAL_DECISIONS:
        raise ValueError(f"decision must be one of {APPROVAL_DECISIONS}, not {decision!r}")
    return {"type": "approval.respond", "call_id": call_id, "decision": decision}
