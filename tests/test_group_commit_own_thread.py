"""The delta group commit runs on a database thread of its own (realtime.infra.db.commit_executor,
issue 22): with every thread of the shared pool held by slow calls, the streams' text is still
committed. This is what let REALTIME_DB_THREADS drop from 16 to 4."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from realtime.infra.db import db
from realtime.runs.delta_writer import DeltaWriter
from sessions_app import services
from sessions_app.models import AgentRun

pytestmark = pytest.mark.django_db(transaction=True)


async def test_text_is_committed_while_every_shared_database_thread_is_busy(user):
    conversation = await db(services.create_conversation)(user.pk)
    await db(services.post_user_message)(conversation.pk, uuid.uuid4(), "hi")
    claim = await db(services.claim_next_run)(conversation.pk, "node-1", 30)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1, thread_name_prefix="shared"))
    release = threading.Event()
    held = asyncio.ensure_future(db(release.wait)(10))  # the shared pool's only thread, taken
    writer = DeltaWriter(lease_seconds=30)
    failures: list = []
    text = writer.open(claim, failures.append)
    try:
        text.add("Hel")
        text.add("lo")
        await asyncio.wait_for(text.committed(), 5)
        assert not held.done()  # committed while the shared thread was still held
    finally:
        release.set()
        await held
        await writer.stop()
    run = await db(AgentRun.objects.get)(pk=claim.run_id)
    assert (await db(services.committed_text)(run), run.next_index, failures) == ("Hello", 1, [])
