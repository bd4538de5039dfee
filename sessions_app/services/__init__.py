"""The services: every write to the models goes through here. Design: docs/architecture.md.

Rules:
- Only services write models (the admin's few edits included, through the fields it allows).
  Views, consumers, commands and the run supervisor call these functions; they never save a
  model themselves. Services are sync; async callers wrap them with realtime.infra.db.db.
- A service that appends events returns them (`Committed`, `PostedMessage`, `ClaimedRun`,
  `CancelRequested`); realtime code publishes them through realtime.fanout.publish.commit_and_publish.
- Seq is allocated only under the conversation row lock (services/event_log.py explains why
  that makes the log gapless across processes).

Modules: `errors` (refusals), `conversations`, `event_log` (appending and reading the log,
user messages), `connections` (sessions, acks, resync), `nodes` (dead nodes), `runs` (claims,
deltas, completion), `tools` (the tool journal, approvals, model calls; `journal` their events),
`retention` (pruning), `sql` (plain SQL for hot paths). Revocation of
tokens is its own module, sessions_app/tokens.py; its two writes are re-exported here.
This package re-exports the public functions, so callers write `services.open_session(...)`.
"""

from sessions_app.services.connections import (
    AckWrite,
    OpenedSession,
    close_connection,
    disconnect_connections,
    open_session,
    reconcile_acks,
    record_ack,
    record_acks,
    record_auth_refresh,
    touch_connections,
)
from sessions_app.services.conversations import create_conversation, get_owned_conversation
from sessions_app.services.errors import (
    ConversationForbidden,
    ConversationNotFound,
    LeaseLost,
    RunCancelled,
    ServiceError,
    Unauthenticated,
)
from sessions_app.services.event_log import (
    Committed,
    NewMessage,
    PostedMessage,
    WireFrame,
    append_event,
    conversation_last_seq,
    encode_frame,
    events_after,
    first_kept_seq,
    frames_after,
    message_payload,
    post_user_message,
    post_user_messages,
)
from sessions_app.services.nodes import NodeRelease, open_connection_nodes_not_in, release_node
from sessions_app.services.retention import (
    AuthPruneResult,
    PruneResult,
    prune_connections_and_tokens,
    prune_events,
)
from sessions_app.services.runs import (
    CancelRequested,
    ClaimedRun,
    Completion,
    DeltaWrite,
    RunContext,
    append_run_delta,
    append_run_deltas,
    claim_next_run,
    claim_runs,
    claimable_conversations,
    committed_text,
    complete_run,
    complete_runs,
    fail_run,
    load_run_context,
    release_run,
    renew_run_lease,
    request_cancel,
)
from sessions_app.services.tools import (
    ApprovalAnswer,
    CallRecord,
    CallWritten,
    Journal,
    LocalContext,
    ModelCallRecord,
    approvals_waiting,
    begin_call,
    call_id_for,
    expire_approvals,
    finish_call,
    give_up_unknown,
    load_journal,
    record_demo_effect,
    record_model_call,
    resolve_approval,
    run_local_call,
    start_call,
)
from sessions_app.tokens import revoke_sign_in, revoke_user_sessions

__all__ = [
    "AckWrite",
    "ApprovalAnswer", "CallRecord", "CallWritten", "Journal", "LocalContext", "ModelCallRecord",
    "approvals_waiting", "begin_call", "call_id_for", "expire_approvals", "finish_call", "give_up_unknown",
    "load_journal", "record_demo_effect", "record_model_call", "resolve_approval", "run_local_call", "start_call",
    "AuthPruneResult", "CancelRequested", "ClaimedRun", "Committed", "Completion", "ConversationForbidden",
    "ConversationNotFound", "DeltaWrite",
    "LeaseLost", "NewMessage", "NodeRelease", "OpenedSession", "PostedMessage", "PruneResult", "RunCancelled",
    "RunContext",
    "ServiceError", "Unauthenticated", "WireFrame", "append_event", "append_run_delta",
    "append_run_deltas",
    "claim_next_run", "claim_runs", "claimable_conversations", "close_connection", "committed_text", "complete_run",
    "complete_runs",
    "conversation_last_seq",
    "create_conversation", "disconnect_connections", "encode_frame", "events_after", "fail_run", "first_kept_seq",
    "frames_after",
    "get_owned_conversation", "load_run_context", "message_payload", "open_connection_nodes_not_in",
    "open_session", "post_user_message", "post_user_messages", "prune_connections_and_tokens", "prune_events",
    "reconcile_acks",
    "record_ack", "record_acks", "record_auth_refresh",
    "release_node", "release_run", "renew_run_lease", "request_cancel", "revoke_sign_in", "revoke_user_sessions",
    "touch_connections",
]
