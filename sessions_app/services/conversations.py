"""Conversations: creation, ownership, and the row lock every append starts with."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from sessions_app.models import Conversation
from sessions_app.services.errors import ConversationForbidden, ConversationNotFound


def create_conversation(user_id: int, title: str = "") -> Conversation:
    return Conversation.objects.create(owner_id=user_id, title=title[:200])


# A title is what a list of conversations shows on one line: the first message's first line,
# cut at a word boundary (every chat product names a conversation this way, issue 23).
TITLE_CHARS = 60


def title_from(text: str) -> str:
    """The title a conversation gets from its first message: its first non-empty line with
    whitespace collapsed, at most TITLE_CHARS characters (cut at a word, with "…")."""
    line = next((" ".join(part.split()) for part in text.splitlines() if part.strip()), "")
    if len(line) <= TITLE_CHARS:
        return line
    head = line[:TITLE_CHARS]  # one character more than is kept: did a word end there?
    cut = head[: head.rindex(" ")] if " " in head[TITLE_CHARS // 2 :] else head[: TITLE_CHARS - 1]
    return cut.rstrip() + "…"


def get_owned_conversation(user_id: Any, conversation_id: Any) -> Conversation:
    try:
        conversation = Conversation.objects.get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValueError, TypeError, ValidationError):
        raise ConversationNotFound("no such conversation") from None
    if str(conversation.owner_id) != str(user_id):
        raise ConversationForbidden("not your conversation")
    return conversation


# Writers lock the conversation row FOR NO KEY UPDATE, not FOR UPDATE: the two serialise
# writers alike, but FOR UPDATE also blocks the key-share lock that PostgreSQL's foreign-key
# check takes on the row when a Connection referencing it is inserted. With FOR UPDATE, every
# connect on a streaming conversation waited at its commit for the current delta batch
# (tests/test_client_id_replacement.py, the conversation-row-lock test).
def lock_conversation(conversation_id: Any) -> Conversation:
    try:
        return Conversation.objects.select_for_update(no_key=True).get(pk=conversation_id)
    except Conversation.DoesNotExist:
        # Deleted under an open socket or a run: a refusal the callers know, not a crash.
        raise ConversationNotFound("this conversation no longer exists") from None
