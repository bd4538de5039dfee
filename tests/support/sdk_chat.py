"""End-to-end helpers driving real daphne nodes with the Python SDK (`tether_client`).

`ChatSession` wraps one `TetherClient` and records, with arrival times, everything its
application sees; `check_conversation` then compares that record with the database (the
event log, messages, runs). Plus node probes (`/readyz`, process exit) and a private
`redis-server` that a test may kill and restart.

Why ~440 lines: every end-to-end deploy test uses all of it together (sessions, the database
check, node probes); the private redis-server is the only part that could stand alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from channels.db import database_sync_to_async
from tether_client import (
    AgentCompleted,
    AgentDelta,
    AgentFailed,
    AgentStarted,
    Backoff,
    Connected,
    Disconnected,
    MessageAcked,
    MessageCreated,
    TetherClient,
)
from tether_client.events import SequencedEvent

from sessions_app.models import AgentRun, Conversation, Event, Message
from tests.support.daphne_nodes import DaphneNode
from tests.support.ports import free_port
from tests.support.waiting import eventually

# --- nodes ----------------------------------------------------------------------------------

# Node settings for the end-to-end deploy tests: short sweeps, leases, grace and TTLs so that
# takeovers and drains happen within seconds.
FAST_NODE_ENV = {
    "REALTIME_DEMO_AGENT_DELAY_MS": 20,
    "REALTIME_RUN_SWEEP_INTERVAL": 0.3,
    "REALTIME_DRAIN_GRACE": 1,
    "REALTIME_NODE_TTL": 3,
    "REALTIME_NODE_REAP_INTERVAL": 0.5,
    "REALTIME_RUN_LEASE_SECONDS": 2,
    "REALTIME_RATE_CONNECT_IP": "100000/60",  # every test client is 127.0.0.1
}


async def readyz(port: int, timeout: float = 1.0) -> int | None:
    """The node's /readyz status code, None when nothing answers."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.get(f"http://127.0.0.1:{port}/readyz")
            return response.status_code
    except httpx.HTTPError:
        return None


async def wait_ready(node: Any, timeout: float = 30.0, interval: float = 0.05) -> float:
    """Polls /readyz until it answers 200; returns the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await readyz(node.port)
        if last == 200:
            return time.monotonic()
        if node.proc is not None and node.proc.poll() is not None:
            raise AssertionError(f"{node.node_id} exited ({node.proc.returncode}):\n{node.tail()}")
        await asyncio.sleep(interval)
    raise AssertionError(f"{node.node_id}: /readyz not 200 within {timeout}s (last {last})\n{node.tail()}")


async def wait_exit(node: Any, timeout: float = 20.0) -> int:
    """Waits for the node's process to exit by itself; returns its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = node.proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.02)
    raise AssertionError(f"{node.node_id} still running {timeout}s after the signal:\n{node.tail()}")


async def runs_streaming(count: int, min_deltas: int = 3, timeout: float = 15.0) -> dict[str, str]:
    """Waits until the database shows `count` runs running with at least `min_deltas` deltas
    committed (the server's truth: the clients may lag behind it); returns run id -> node."""

    def check():
        rows = AgentRun.objects.filter(status=AgentRun.Status.RUNNING, next_index__gte=min_deltas)
        found = {str(pk): node for pk, node in rows.values_list("id", "node")}
        return found if len(found) == count else None

    return await eventually(
        database_sync_to_async(check), timeout=timeout, interval=0.02, what=f"{count} runs streaming"
    )


async def streaming_on_both(a: DaphneNode, b: DaphneNode, using: str = "default", timeout: float = 20.0) -> None:
    """Waits until the database (`using`) shows runs streaming (3 deltas or more committed) on
    both nodes: the moment a test breaks something mid-answer on each of them."""

    def both() -> bool:
        rows = AgentRun.objects.using(using).filter(
            status=AgentRun.Status.RUNNING, next_index__gte=3, node__in=[a.node_id, b.node_id]
        )
        return set(rows.values_list("node", flat=True)) == {a.node_id, b.node_id}

    await eventually(
        database_sync_to_async(both), timeout=timeout, interval=0.02, what="answers streaming on both nodes"
    )


def user_tokens(count: int, prefix: str = "e2e") -> list[str]:
    """An access token for each of `count` new users, created without password hashing
    (create_user hashes, which is slow)."""
    from django.contrib.auth import get_user_model

    from tests.conftest import access_for

    user_model = get_user_model()
    tag = uuid.uuid4().hex[:6]
    return [access_for(user_model.objects.create(username=f"{prefix}-{tag}-{i}")) for i in range(count)]


# --- the SDK under test, recorded -----------------------------------------------------------


@dataclass
class Sent:
    client_msg_id: str
    text: str
    at: float


@dataclass
class ChatSession:
    """One SDK client and everything its application saw, in arrival order."""

    client: TetherClient
    name: str = ""
    log: list[tuple[float, Any]] = field(default_factory=list)  # (monotonic time, event)
    seqs: list[int] = field(default_factory=list)
    types: dict[int, str] = field(default_factory=dict)  # seq -> event type
    created: list[MessageCreated] = field(default_factory=list)
    started: dict[str, AgentStarted] = field(default_factory=dict)
    deltas: dict[str, list[AgentDelta]] = field(default_factory=lambda: defaultdict(list))
    completed: dict[str, list[AgentCompleted]] = field(default_factory=lambda: defaultdict(list))
    failed: list[AgentFailed] = field(default_factory=list)
    acks: list[MessageAcked] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # ordering violations seen by the app

    def __post_init__(self) -> None:
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None

    @classmethod
    def open(
        cls,
        endpoints: list[str],
        token: str,
        *,
        name: str = "",
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        backoff: Backoff | None = None,
        **options: Any,
    ) -> ChatSession:
        client = TetherClient(
            endpoints,
            token=token,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            backoff=backoff,
            **options,
        )
        session = cls(client, name or client.client_id[:8])
        session._reader = asyncio.create_task(session._read(), name=f"chat-{session.name}")
        return session

    async def _read(self) -> None:
        try:
            await self._consume()
        finally:
            async with self._changed:
                self._changed.notify_all()  # waiters notice that the client stopped

    async def _consume(self) -> None:
        async for event in self.client.events():
            self.log.append((time.monotonic(), event))
            if isinstance(event, SequencedEvent):
                expected = (self.seqs[-1] if self.seqs else 0) + 1
                if event.seq != expected:
                    self.problems.append(f"seq {event.seq} applied after {expected - 1}")
                self.seqs.append(event.seq)
                self.types[event.seq] = event.type
            if isinstance(event, MessageCreated):
                self.created.append(event)
            elif isinstance(event, AgentStarted):
                self.started[event.run_id] = event
            elif isinstance(event, AgentDelta):
                self.deltas[event.run_id].append(event)
            elif isinstance(event, AgentCompleted):
                self.completed[event.run_id].append(event)
            elif isinstance(event, AgentFailed):
                self.failed.append(event)
            elif isinstance(event, MessageAcked):
                self.acks.append(event)
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str = "") -> Any:
        """Waits (event-driven, with a deadline) until `predicate()` is truthy."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    while not (result := predicate()):
                        if self.client.closed:
                            raise AssertionError(f"{self.name}: client stopped ({self.client.error!r})")
                        await self._changed.wait()
                    return result
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: timed out after {timeout}s waiting for {what or predicate}; "
                f"connected={self.client.connected} last_seq={self.client.last_seq} "
                f"sent={len(self.sent)} completed={self.completed_count()} "
                f"events={[type(e).__name__ for _, e in self.log[-8:]]}"
            ) from None

    # --- sending ----------------------------------------------------------------------

    async def send(self, text: str) -> str:
        client_msg_id = await self.client.send(text)
        self.sent.append(Sent(client_msg_id, text, time.monotonic()))
        return client_msg_id

    def answer_to(self, client_msg_id: str) -> AgentCompleted | None:
        message_id = next(
            (c.message.id for c in self.created if c.message.client_msg_id == client_msg_id), None
        )
        if message_id is None:
            return None
        run_id = next((s.run_id for s in self.started.values() if s.in_reply_to == message_id), None)
        if run_id is None or not self.completed.get(run_id):
            return None
        return self.completed[run_id][0]

    async def wait_answer(self, client_msg_id: str, timeout: float = 30.0) -> AgentCompleted:
        return await self.wait_for(lambda: self.answer_to(client_msg_id), timeout, f"the answer to {client_msg_id}")

    async def converse(self, text: str, timeout: float = 30.0) -> AgentCompleted:
        return await self.wait_answer(await self.send(text), timeout)

    async def converse_until(
        self, stop: asyncio.Event, texts: Iterable[str], min_messages: int, timeout: float = 60.0
    ) -> None:
        """Keeps a conversation going: one message, its whole answer, the next message...
        until `stop` is set and at least `min_messages` were answered."""
        for text in texts:
            if stop.is_set() and len(self.sent) >= min_messages:
                return
            await self.converse(text, timeout)

    # --- connection state -------------------------------------------------------------

    def connected_times(self) -> list[tuple[float, Connected]]:
        return [(t, e) for t, e in self.log if isinstance(e, Connected)]

    def losses(self) -> list[tuple[float, Disconnected]]:
        """Socket losses as the application saw them (Disconnected of a ready socket)."""
        return [(t, e) for t, e in self.log if isinstance(e, Disconnected) and not e.final]

    def current_node(self) -> str | None:
        """The node of the latest `Connected` the application saw, None after a loss."""
        for _, event in reversed(self.log):
            if isinstance(event, Connected):
                return event.node
            if isinstance(event, Disconnected):
                return None
        return None

    def completed_count(self) -> int:
        return sum(len(v) for v in self.completed.values())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 5)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
            if not self._reader.done():
                self._reader.cancel()


def latency_summary(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    return f"n={len(ordered)} max={ordered[-1]:.3f}s p50={statistics.median(ordered):.3f}s min={ordered[0]:.3f}s"


# --- the record against the database --------------------------------------------------------


@dataclass(frozen=True)
class ConversationCheck:
    last_seq: int
    messages: int
    runs: list[dict]  # id, status, node, claims


def check_conversation(
    session: ChatSession, expected_answers: dict[str, str] | None = None, using: str = "default"
) -> ConversationCheck:
    """Asserts the exactly-once contract of one client against the database (sync: run it in
    a thread). `expected_answers`: client_msg_id -> the whole text the agent must answer;
    `using`: the database alias the nodes wrote to."""
    name = session.name
    cid = session.client.conversation_id
    assert cid is not None, f"{name}: never connected"
    assert not session.problems, f"{name}: {session.problems}"
    conversation = Conversation.objects.using(using).get(pk=cid)
    events = Event.objects.using(using).filter(conversation_id=cid).order_by("seq")
    log = list(events.values_list("seq", "type", "run_id"))
    db_seqs = [seq for seq, _, _ in log]
    assert db_seqs == list(range(1, conversation.last_seq + 1)), f"{name}: the log has holes: {db_seqs}"
    # Every seq of the conversation exactly once and in order, each with the logged type.
    assert session.seqs == db_seqs, f"{name}: received {session.seqs}, log {db_seqs}"
    assert session.types == {seq: kind for seq, kind, _ in log}, f"{name}: event types differ from the log"

    # Every message sent delivered exactly once.
    sent_ids = [s.client_msg_id for s in session.sent]
    assert len(set(sent_ids)) == len(sent_ids), f"{name}: client_msg_ids reused"
    users = list(
        Message.objects.using(using).filter(conversation_id=cid, role=Message.Role.USER)
        .values_list("id", "client_msg_id", "text")
    )
    assert sorted(str(m[1]) for m in users) == sorted(sent_ids), f"{name}: stored {users}, sent {session.sent}"
    texts = {s.client_msg_id: s.text for s in session.sent}
    assert all(texts[str(m[1])] == m[2] for m in users), f"{name}: stored texts differ"
    assert [str(c.message.client_msg_id) for c in session.created] == [str(m[1]) for m in users], (
        f"{name}: message.created events do not match the stored messages"
    )

    # Exactly one run per user message, all completed, each text == its deltas as received.
    runs = list(
        AgentRun.objects.using(using).filter(conversation_id=cid).values(
            "id", "message_id", "status", "node", "claims", "text", "next_index"
        )
    )
    assert sorted(str(r["message_id"]) for r in runs) == sorted(str(m[0]) for m in users), f"{name}: runs {runs}"
    assert all(r["status"] == AgentRun.Status.COMPLETED for r in runs), f"{name}: {[r['status'] for r in runs]}"
    assert not session.failed, f"{name}: agent.failed {session.failed}"
    assistant = dict(
        Message.objects.using(using).filter(conversation_id=cid, role=Message.Role.ASSISTANT).values_list("seq", "text")
    )
    completed_in_log = [seq for seq, kind, _ in log if kind == "agent.completed"]
    assert len(completed_in_log) == len(runs) == len(assistant), f"{name}: {len(completed_in_log)} completions logged"
    by_message = {str(m[0]): str(m[1]) for m in users}
    for run in runs:
        run_id = str(run["id"])
        done = session.completed.get(run_id, [])
        assert len(done) == 1, f"{name}: run {run_id} completed {len(done)} times at the client"
        deltas = session.deltas.get(run_id, [])
        assert [d.index for d in deltas] == list(range(run["next_index"])), f"{name}: delta indexes of {run_id}"
        streamed = "".join(d.text for d in deltas)
        assert streamed == done[0].message.text == run["text"] == assistant[done[0].seq], (
            f"{name}: run {run_id}: deltas {streamed!r} vs completed {done[0].message.text!r}"
        )
        assert session.started[run_id].in_reply_to == str(run["message_id"])
        if expected_answers is not None:
            client_msg_id = by_message[str(run["message_id"])]
            assert streamed == expected_answers[client_msg_id], f"{name}: wrong answer to {client_msg_id}"
    return ConversationCheck(
        last_seq=conversation.last_seq,
        messages=len(users),
        runs=[{k: r[k] for k in ("id", "status", "node", "claims")} for r in runs],
    )


def count_answer(n: int) -> str:
    """What the demo agent answers to "count n"."""
    return " ".join(f"w{i}" for i in range(1, n + 1))


def expected_answers(session: ChatSession) -> dict[str, str]:
    """client_msg_id -> the demo agent's answer, for sessions that only sent "count N"."""
    return {s.client_msg_id: count_answer(int(s.text.split()[1])) for s in session.sent}


# --- a private Redis ------------------------------------------------------------------------


class RedisServer:
    """A `redis-server` of one test, without persistence: a kill loses everything it held,
    as a Redis restart without persistence does in production."""

    def __init__(self, executable: str = "redis-server") -> None:
        self.executable = executable
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="redis-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early:\n{self.tail()}")
            if self.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server not answering after {timeout}s:\n{self.tail()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, every connection dropped, all data gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, lines: int = 20) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])
