"""Gapless seq under concurrent writers in several OS processes (two server nodes writing
to one conversation at once must never produce a duplicate or a hole)."""

import multiprocessing
import time

import pytest
from django.db import connection

from sessions_app import services
from sessions_app.models import Conversation, Event
from tests.support.seq_writer import write

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def test_concurrent_processes_never_duplicate_or_skip(user):
    conversation = services.create_conversation(user.pk)
    processes, per_process = 4, 60
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # every process starts writing at the same moment
    with ctx.Pool(processes) as pool:
        written = pool.starmap(write, [(_database_url(), str(conversation.pk), per_process, start_at)] * processes)
    total = sum(written)
    assert total == processes * per_process
    seqs = list(Event.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, total + 1))
    assert Conversation.objects.get(pk=conversation.pk).last_seq == total
