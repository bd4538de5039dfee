"""Every Prometheus metric of a Tether process, defined once (design: docs/operations.md).

Rules that hold for every metric here:
- Names follow Prometheus conventions: the `tether_` prefix, base units in the name
  (`_seconds`, `_events`), and counters end in `_total` (prometheus_client appends it to the
  names below).
- Label values come from small fixed sets (close codes, outcomes, kinds), never from ids.
- Call sites instrument with one line each. On the per-delta and per-frame paths that line is
  at most a counter increment or one histogram observation per batch or per node (never one
  per socket per event).
- Each process has its own registry, the default one: a daphne node serves it at /metrics, a
  `manage.py run_agents` worker on its own port (`--metrics-port`). We chose a port per worker
  over prometheus_client's multiprocess mode: that mode needs one directory shared by every
  process of a host and cannot export callback gauges such as the open-connection count,
  while workers usually run in containers of their own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from realtime.core import closes

# --- sockets ------------------------------------------------------------------------------

CONNECTIONS_OPEN = Gauge(
    "tether_connections_open", "WebSocket connections open on this node (connecting or ready).", ["node"]
)
CONNECTS = Counter(
    "tether_connects",
    "Connect attempts by outcome: ready (new or not resumable), resumed (ready with resumed:true), "
    "refused (closed by the server before ready; `code` is the close code) or abandoned (the client "
    "went away before ready).",
    ["outcome", "code"],
)
CLOSES = Counter("tether_connection_closes", "Sockets closed, by close code and reason.", ["code", "reason"])
RESUMES = Counter(
    "tether_resumes",
    "Connects to an existing conversation, by whether `ready` said resumed (false: the client must reload).",
    ["resumed"],
)
REPLAY_EVENTS = Histogram(
    "tether_resume_replay_events",
    "Events replayed after `ready` (ready.replay_count) on connects to an existing conversation.",
    buckets=(0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000),
)
CONNECT_READY_SECONDS = Histogram(
    "tether_connect_ready_seconds",
    "From the `connect` frame's arrival to the `ready` frame (token check, limits, feed join, session row).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter(
    "tether_rate_limit_refusals",
    "Refusals by a rate limit: connect_user, connect_ip, connections_per_user, new_conversations_user "
    "(4429 at connect), frames (per socket), messages (per conversation), runs_per_user, and unchecked "
    "(a message refused because the runs limit could not be checked; the socket stays open for the last four).",
    ["kind"],
)
AUTH_REFRESHES = Counter(
    "tether_auth_refreshes",
    "`auth.refresh` frames by kind (refresh token or new access token) and result (ok, refused).",
    ["kind", "result"],
)

# --- the event log and its fan-out --------------------------------------------------------

EVENTS_APPENDED = Counter("tether_events_appended", "Events committed to the log, by type.", ["type"])
DELTAS_APPENDED = EVENTS_APPENDED.labels("agent.delta")  # the hot path skips the label lookup
DELTA_BATCH_WRITES = Histogram(
    "tether_delta_batch_writes",
    "Deltas committed per group-commit transaction.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
DELTA_BATCH_SECONDS = Histogram(
    "tether_delta_batch_seconds",
    "Duration of one group-commit transaction of deltas.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
FANOUT_LAG_SECONDS = Histogram(
    "tether_fanout_lag_seconds",
    "From PUBLISH by the writer to the message's arrival at this node's subscription (wall clocks "
    "of two processes: keep node clocks in sync).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RESYNC_REPAIRED_EVENTS = Counter(
    "tether_resync_repaired_events",
    "Events the periodic resync found committed but never announced to a socket by the live feed "
    "(the socket then reads them from the log).",
)

# --- agent runs ---------------------------------------------------------------------------

RUNS_STARTED = Counter("tether_runs_started", "Runs claimed for the first time by this process.")
RUNS_TAKEN_OVER = Counter(
    "tether_runs_taken_over",
    "Runs this process claimed after another owner lost or released them (node died, drained, paused).",
)
RUNS_FINISHED = Counter(
    "tether_runs_finished", "Runs this process ended, by status: completed, failed, cancelled.", ["status"]
)
RUN_SECONDS = Histogram(
    "tether_run_duration_seconds",
    "How long this process executed a run, from its claim to its end, by how it ended (completed, "
    "failed, cancelled, lease_lost, released). A run taken over is counted on each process.",
    ["status"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)

# --- tools and approvals --------------------------------------------------------------------

TOOL_CALLS = Counter(
    "tether_tool_calls",
    "Tool calls ended, by effect class (read, idempotent, local, once) and status (ok, error, unknown, "
    "denied), counted where the result was recorded.",
    ["effect", "status"],
)
APPROVALS_RESOLVED = Counter(
    "tether_approvals_resolved", "Approvals decided, by decision: approved, denied, expired.", ["decision"]
)
APPROVALS_WAITING = Gauge(
    "tether_approvals_waiting",
    "Approvals waiting for a person's decision, over every node (read from the database when scraped; "
    "NaN when it cannot be read).",
)


def watch_approvals(count: Callable[[], float]) -> None:
    """The gauge reads `count` at scrape time (the database is the only place that knows)."""

    def read() -> float:
        try:
            return float(count())
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database did
            return float("nan")

    APPROVALS_WAITING.set_function(read)


# --- the node -----------------------------------------------------------------------------

DRAIN_SECONDS = Gauge(
    "tether_drain_seconds",
    "The drain after SIGTERM: `sockets` is the time to move every socket, `total` the whole drain "
    "(set just before the process exits: it is in the log line too).",
    ["phase"],
)


def watch_node(node_id: str, open_connections: Callable[[], float]) -> None:
    """Open sockets are counted at scrape time: nothing to update per connect or close."""
    CONNECTIONS_OPEN.labels(node_id).set_function(open_connections)


def unwatch_node(node_id: str) -> None:
    with contextlib.suppress(KeyError):  # never watched (a worker) or already removed
        CONNECTIONS_OPEN.remove(node_id)


# Close codes that may become a label value: the WebSocket protocol's own (RFC 6455 section
# 7.4.1, and 1012-1014 from the IANA registry) and every code of the server's close table. A
# client chooses its own close code (3000-4999 are open to it), and each new value would be a
# new time series (issue 24): anything else is counted as "other".
LABELLED_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015}
    | {reason.close_code for reason in vars(closes).values() if isinstance(reason, closes.CloseReason)}
)


def close_code_label(close_code: int | None) -> str:
    if close_code is None:
        return "none"
    return str(close_code) if close_code in LABELLED_CLOSE_CODES else "other"


def connect_ended(close_code: int | None, reason: str, was_ready: bool) -> None:
    """A socket ended: its close code, and the connect's outcome if it never got `ready`."""
    code = close_code_label(close_code)
    CLOSES.labels(code, reason).inc()
    if not was_ready:
        CONNECTS.labels("refused" if close_code is not None and close_code >= 4000 else "abandoned", code).inc()


def connect_ready(resuming: bool, resumed: bool, replay_count: int, seconds: float) -> None:
    CONNECTS.labels("resumed" if resumed else "ready", "").inc()
    CONNECT_READY_SECONDS.observe(seconds)
    if resuming:
        RESUMES.labels("true" if resumed else "false").inc()
        REPLAY_EVENTS.observe(replay_count)


def events_appended(entries: list[tuple[str, dict, object]]) -> None:
    for kind, _, _ in entries:
        EVENTS_APPENDED.labels(kind).inc()


def delta_batch(writes: int, seconds: float) -> None:
    DELTA_BATCH_WRITES.observe(writes)
    DELTA_BATCH_SECONDS.observe(seconds)


def fanout_arrived(published_at: float | None) -> None:
    if published_at is not None:
        FANOUT_LAG_SECONDS.observe(max(0.0, time.time() - published_at))


def run_claimed(takeover: bool) -> None:
    (RUNS_TAKEN_OVER if takeover else RUNS_STARTED).inc()


def run_ended(status: str, seconds: float) -> None:
    if status in ("completed", "failed", "cancelled"):
        RUNS_FINISHED.labels(status).inc()
    RUN_SECONDS.labels(status).observe(seconds)
