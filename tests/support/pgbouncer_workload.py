"""A burst's statements (the batched post, claims, group commit with completions) from three
threads, each with its own Django connection, eight rounds each, against DATABASE_URL: run by
tests/e2e/test_pgbouncer_transaction_pooling.py through pgbouncer. Prints "ok" or the first
error and exits 1. `--prepare` lets psycopg prepare them (the control: what breaks behind a
transaction pooler)."""

from __future__ import annotations

import os
import sys
import threading
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, connections  # noqa: E402

from sessions_app import services  # noqa: E402
from sessions_app.services import sql  # noqa: E402

errors: list[BaseException] = []


def rounds(n: int) -> None:
    try:
        if "--prepare" in sys.argv:
            connection.ensure_connection()
            connection.connection.prepare_threshold = 0
            sql._UnpreparedBindingCursor.execute = sql.ServerBindingCursor.execute  # noqa: SLF001
        user = get_user_model().objects.create_user(username=f"pgb-{uuid.uuid4().hex[:8]}")
        for _ in range(8):
            ids = [str(services.create_conversation(user.pk).pk) for _ in range(3)]
            posted = services.post_user_messages([services.NewMessage(c, str(uuid.uuid4()), "hi") for c in ids])
            assert all(isinstance(p, services.PostedMessage) for p in posted), posted
            claims = services.claim_runs(ids, f"node-{n}", 30)
            assert all(isinstance(c, services.ClaimedRun) for c in claims), claims
            outcomes = services.append_run_deltas(
                [services.DeltaWrite(c.conversation_id, c.run_id, c.fencing_token, "ok") for c in claims], 30)
            completed = services.complete_runs(
                [services.Completion(c.conversation_id, c.run_id, c.fencing_token, None) for c in claims])
            failures = [o for o in (*outcomes.values(), *completed) if isinstance(o, Exception)]
            assert not failures and len(completed) == 3, (outcomes, completed)
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)
    finally:
        connections.close_all()


threads = [threading.Thread(target=rounds, args=(n,)) for n in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
if errors:
    print(f"{type(errors[0]).__name__}: {errors[0]}")
    sys.exit(1)
print("ok")
