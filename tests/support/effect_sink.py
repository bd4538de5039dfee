"""A downstream service for tool calls, in the test process: a real HTTP server on loopback that
records every request with its headers and body, deduplicates by `Idempotency-Key` and counts
the effects it applies, refuses a request whose `Tether-Fence` is lower than one it has seen
for the same run (a zombie's late request), and holds chosen requests open until the test
releases them.

It is what docs/protocol.md ("Tools and approvals") tells a service to be, so the end-to-end
tests can check each effect class's promise where it matters: at the service.

- `apply`: the first request with a key applies the effect (counted in `applied`), and its
  answer is stored; a later request with the same key gets the stored answer and applies
  nothing (`duplicate`).
- `stale`: a request whose fence is lower than the highest fence the sink has processed for
  its run is refused with 409 and applies nothing.
- A hold catches the next request(s) matching a predicate. `process_first=True`: the effect is
  applied at once and the *answer* waits (the effect happened, its caller does not know yet:
  a node killed now leaves an outcome it never recorded). `process_first=False`: the request
  itself waits before it is processed (a late delivery, as from a frozen node's socket).

Runs in its own threads (`ThreadingHTTPServer`), so holding a request never blocks the test's
event loop, and a node killed mid-request only breaks the answer's write, which is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.waiting import eventually

IDEMPOTENCY_HEADER = "idempotency-key"
FENCE_HEADER = "tether-fence"
# A hold never holds forever: a test that forgot to release fails instead of hanging.
HOLD_LIMIT = 60.0


@dataclass
class SinkRequest:
    index: int  # arrival order, from 0
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any
    arrived_at: float  # time.monotonic()
    # Set when processed: applied, duplicate, stale or bad (and the processing order).
    outcome: str | None = None
    processed_index: int | None = None
    status: int | None = None
    answer: Any = None
    # False when writing the answer failed (its caller was gone); True does not prove it was read.
    answered: bool | None = None
    held: bool = False

    @property
    def key(self) -> str | None:
        return self.headers.get(IDEMPOTENCY_HEADER)

    @property
    def fence(self) -> int | None:
        value = self.headers.get(FENCE_HEADER)
        return int(value) if value is not None and value.lstrip("-").isdigit() else None

    @property
    def run_id(self) -> str | None:
        return self.body.get("run_id") if isinstance(self.body, dict) else None

    @property
    def n(self) -> Any:
        return self.body.get("n") if isinstance(self.body, dict) else None


@dataclass
class Hold:
    """Catches the next `count` requests matching `match`; `release()` lets them go."""

    match: Callable[[SinkRequest], bool]
    process_first: bool
    count: int = 1
    caught: list[SinkRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._released = threading.Event()
        self._arrived = threading.Event()

    def release(self) -> None:
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    async def arrived(self, timeout: float = 20.0) -> SinkRequest:
        """The first request this hold caught (waits for it)."""
        await eventually(self._arrived.is_set, timeout=timeout, interval=0.01, what="a held request")
        return self.caught[0]

    def _wait(self) -> None:
        self._released.wait(HOLD_LIMIT)


class EffectSink:
    def __init__(self, *, refuse_stale: bool = True) -> None:
        self.refuse_stale = refuse_stale
        self._lock = threading.Lock()
        self._requests: list[SinkRequest] = []
        self._processed = 0
        self._holds: list[Hold] = []
        # key -> the request that applied it; run id -> the highest fence processed for it.
        self._applied: dict[str, SinkRequest] = {}
        self._fences: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- running -------------------------------------------------------------------------

    def start(self) -> EffectSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server calls it by this name
                sink._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads `requests`
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="effect-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for hold in list(self._holds):
            hold.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> EffectSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the sink is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/effects"

    # --- what the test controls and reads --------------------------------------------------

    def hold(self, match: Callable[[SinkRequest], bool], *, process_first: bool, count: int = 1) -> Hold:
        hold = Hold(match, process_first, count)
        with self._lock:
            self._holds.append(hold)
        return hold

    @property
    def requests(self) -> list[SinkRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def applied(self) -> dict[str, SinkRequest]:
        """Effect key -> the request that applied it (each key applies at most once)."""
        with self._lock:
            return dict(self._applied)

    def requests_for(self, key: str) -> list[SinkRequest]:
        return [r for r in self.requests if r.key == key]

    async def wait_for(self, match: Callable[[SinkRequest], bool], timeout: float = 20.0,
                       what: str = "a request") -> SinkRequest:
        """The first recorded request matching `match` (waits for it)."""

        def found() -> SinkRequest | None:
            return next((r for r in self.requests if match(r)), None)

        return await eventually(found, timeout=timeout, interval=0.01, what=what)

    # --- serving ---------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        request = SinkRequest(
            index=0, method=handler.command, path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()}, body=body, arrived_at=time.monotonic(),
        )
        with self._lock:
            request.index = len(self._requests)
            self._requests.append(request)
            hold = next((h for h in self._holds if len(h.caught) < h.count and h.match(request)), None)
            if hold is not None:
                request.held = True
                hold.caught.append(request)
                hold._arrived.set()  # noqa: SLF001 - the hold's own event
        if hold is not None and hold.process_first:
            self._process(request)
            hold._wait()  # noqa: SLF001
        elif hold is not None:
            hold._wait()  # noqa: SLF001
            self._process(request)
        else:
            self._process(request)
        payload = json.dumps(request.answer).encode()
        try:
            handler.send_response(request.status or 500)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
            request.answered = True
        except OSError:  # the caller is gone (its node was killed)
            request.answered = False

    def _process(self, request: SinkRequest) -> None:
        with self._lock:
            request.processed_index = self._processed
            self._processed += 1
            key, fence, run_id = request.key, request.fence, request.run_id
            if not key or fence is None or run_id is None:
                request.outcome, request.status = "bad", 400
                request.answer = {"error": "Idempotency-Key, Tether-Fence and a run_id are required"}
                return
            highest = self._fences.get(run_id)
            if self.refuse_stale and highest is not None and fence < highest:
                request.outcome, request.status = "stale", 409
                request.answer = {"error": f"stale fence {fence}: {highest} was seen for this run"}
                return
            self._fences[run_id] = max(fence, highest or fence)
            first = self._applied.get(key)
            if first is not None:
                request.outcome, request.status, request.answer = "duplicate", 200, first.answer
                return
            request.outcome, request.status = "applied", 200
            request.answer = {"n": request.n, "applied": len(self._applied) + 1}
            self._applied[key] = request
