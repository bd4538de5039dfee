"""Runs in a separate OS process: appends to one conversation as fast as it can."""

from __future__ import annotations

import os
import time
import uuid


def write(database_url: str, conversation_id: str, count: int, start_at: float) -> int:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from sessions_app import services

    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        if i % 2:
            services.post_user_message(conversation_id, uuid.uuid4(), f"from {os.getpid()}")
        else:
            services.append_event(
                conversation_id, "message.created", {"message": {"id": str(uuid.uuid4()), "text": "x"}}
            )
    return count
