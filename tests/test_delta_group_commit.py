"""Group commit of agent deltas (realtime.runs.delta_writer + services.append_run_deltas): one
transaction for many runs keeps every per-run rule of the single-delta path: fencing, cancel,
gapless seq and index, lease renewal; a refused write does not fail the others."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from sessions_app import services
from sessions_app.models import AgentRun, Event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True, params=["default", "orm"])
def implementation(request, monkeypatch):
    """Each test runs on the implementation the database gets (on PostgreSQL the one-trip
    function) and on the ORM reference, which must agree."""
    if request.param == "orm":
        from sessions_app.services import runs

        monkeypatch.setattr(runs, "append_run_deltas_in_one_trip", runs.append_run_deltas_orm)
    return request.param


def _running_run(user) -> services.ClaimedRun:
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), "hi")
    return services.claim_next_run(conversation.pk, "node-1", lease_seconds=5)


def _write(claim: services.ClaimedRun, text: str, token: int | None = None) -> services.DeltaWrite:
    return services.DeltaWrite(claim.conversation_id, claim.run_id, claim.fencing_token if token is None else token,
                               text)


def test_batch_commits_each_run_and_refuses_only_the_bad_writes(user):
    ok_a, ok_b, stale, cancelled = (_running_run(user) for _ in range(4))
    services.request_cancel(cancelled.conversation_id, cancelled.run_id)
    before = timezone.now()

    outcomes = services.append_run_deltas(
        [_write(ok_a, "Hel"), _write(ok_b, "Wor"), _write(stale, "x", token=stale.fencing_token + 1),
         _write(cancelled, "y")],
        lease_seconds=30,
    )

    assert isinstance(outcomes[stale.run_id], services.LeaseLost)
    assert isinstance(outcomes[cancelled.run_id], services.RunCancelled)
    second = services.append_run_deltas([_write(ok_a, "lo"), _write(ok_b, "ld")], lease_seconds=30)
    for claim, text in [(ok_a, "Hello"), (ok_b, "World")]:
        first_frame, second_frame = outcomes[claim.run_id][0], second[claim.run_id][0]
        assert (first_frame["type"], first_frame["index"], second_frame["index"]) == ("agent.delta", 0, 1)
        assert second_frame["seq"] == first_frame["seq"] + 1
        run = AgentRun.objects.get(pk=claim.run_id)
        assert (services.committed_text(run), run.next_index) == (text, 2)
        assert run.lease_expires_at >= before + timedelta(seconds=29)
        seqs = list(Event.objects.filter(conversation_id=claim.conversation_id).values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))
        assert services.complete_run(claim.conversation_id, claim.run_id, claim.fencing_token, None)
    # The refused runs got nothing written.
    for claim in (stale, cancelled):
        assert not Event.objects.filter(run_id=claim.run_id, type="agent.delta").exists()
        assert services.committed_text(AgentRun.objects.get(pk=claim.run_id)) == ""


@pytest.mark.postgres
def test_concurrent_batches_over_the_same_conversations_neither_deadlock_nor_gap(user):
    claims = [_running_run(user) for _ in range(6)]
    errors: list[BaseException] = []

    def node(order: list[services.ClaimedRun]) -> None:
        try:
            for i in range(40):
                services.append_run_deltas([_write(c, f"{i} ") for c in order], lease_seconds=30)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=node, args=(claims,)), threading.Thread(target=node, args=(claims[::-1],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for claim in claims:
        deltas = list(Event.objects.filter(run_id=claim.run_id, type="agent.delta").order_by("seq"))
        assert [d.payload["index"] for d in deltas] == list(range(80))
        seqs = list(Event.objects.filter(conversation_id=claim.conversation_id).values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))
        run = AgentRun.objects.get(pk=claim.run_id)
        assert services.committed_text(run) == "".join(d.payload["text"] for d in deltas)
