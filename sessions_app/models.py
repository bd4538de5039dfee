"""The source of truth. Every write goes through sessions_app.services."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    agent_memory = models.JSONField(default=dict, blank=True)
    # Highest seq ever assigned; incremented under the row lock in the same transaction
    # that inserts the event, which is what makes seq gapless across processes.
    last_seq = models.BigIntegerField(default=0)
    # Highest seq any client of the conversation acknowledged (cumulative acks).
    acked_seq = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField()
    client_msg_id = models.UUIDField(null=True, blank=True)
    # The seq of the event that announced this message (message.created or agent.completed).
    seq = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_msg_id"], name="uniq_message_client_msg_id"
            ),
        ]
        indexes = [models.Index(fields=["conversation", "seq"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"


class Event(models.Model):
    """One entry of a conversation's durable, gapless log: what clients are sent."""

    id = models.BigAutoField(primary_key=True)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    type = models.CharField(max_length=32)
    # The frame without its "type" and "seq" keys.
    payload = models.JSONField()
    run_id = models.UUIDField(null=True, blank=True)
    # Set by the writer under the conversation lock, never below the previous event's
    # (services/event_log.py, log_stamp): grows with seq. auto_now_add would overwrite it at insert.
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="uniq_event_seq"),
        ]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.seq} {self.type}"

    def as_frame(self) -> dict:
        return {"type": self.type, "seq": self.seq, **self.payload}


class AgentRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        # Waiting for a person's decision on a tool call (an Approval): no lease, no node, no
        # task anywhere. The decision (or its expiry) queues the run again.
        WAITING = "waiting"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    # What a node may claim.
    ACTIVE = (Status.QUEUED, Status.RUNNING)
    # Not finished: the runs of a conversation execute one at a time in message order, so a
    # waiting run holds back every later run of its conversation.
    UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.WAITING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="runs")
    # One user message, one run: the database enforces it, not the callers.
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="run")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    node = models.CharField(max_length=128, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Incremented at every claim; appends must present the current value.
    fencing_token = models.BigIntegerField(default=0)
    claims = models.IntegerField(default=0)
    # The run's committed text is `text` followed by the log's agent.delta events of this run
    # with an index at or above `text_upto` (services.committed_text). The delta group commit
    # appends events and moves `next_index` only: rewriting the whole text at every delta made
    # each group commit cost more as answers grew (issue 22: 40 -> 90-145 ms for 200 runs over
    # a 200-delta answer). The text is folded in (text_upto = next_index) where the run stops
    # streaming: its completion, its failure, its wait for an approval. Deltas not folded are
    # younger than REALTIME_RUN_TIMEOUT, so the log's retention (days) never reaches them.
    text = models.TextField(blank=True, default="")
    text_upto = models.IntegerField(default=0, db_default=0)
    next_index = models.IntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Time spent waiting for approvals does not count towards REALTIME_RUN_TIMEOUT: a run
    # waiting 10 minutes for a person must not time out when it continues.
    waiting_since = models.DateTimeField(null=True, blank=True)
    waited_seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["conversation", "created_at"]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"]),
            models.Index(fields=["conversation", "status"]),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"


class ToolCall(models.Model):
    """One tool call of a run: the journal row (docs/architecture.md, "Tools"). Recorded before
    it starts (`intent` when it waits for an approval, else `started`), then its outcome. A run
    continued by another node reads these rows and never calls again a tool whose result is
    recorded. Written only by sessions_app/services/tools.py."""

    class Status(models.TextChoices):
        INTENT = "intent"  # waits for an approval
        STARTED = "started"  # the call may be under way (or may have happened)
        OK = "ok"
        ERROR = "error"
        UNKNOWN = "unknown"  # a `once` call whose outcome was lost (its node died, or it timed out)
        DENIED = "denied"  # never made: its approval was denied or expired, or the run was cancelled

    FINISHED = (Status.OK, Status.ERROR, Status.UNKNOWN, Status.DENIED)

    class Effect(models.TextChoices):
        READ = "read"
        IDEMPOTENT = "idempotent"
        LOCAL = "local"
        ONCE = "once"

    # The call_id of the wire: uuid5 of (run, step, retry), the same on every node and claim.
    id = models.UUIDField(primary_key=True, editable=False)
    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="tool_calls")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="tool_calls")
    # The agent's n-th tool call in this run (0-based), and which retry of it: a `once` call
    # whose outcome was lost is made again only as a new call (retry + 1) a person approved.
    step = models.IntegerField()
    retry = models.IntegerField(default=0)
    tool = models.CharField(max_length=100)
    # Decided once, when the call is recorded; a takeover never reads it from settings again.
    effect = models.CharField(max_length=16, choices=Effect.choices)
    arguments = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # Length of the run's text when the call was recorded: a continued run must reach the
    # same call at the same point of its text, or it diverged from its journal.
    text_offset = models.IntegerField(default=0)
    # How many times the call was started, and the run's fencing token at the latest start
    # (the `Tether-Fence` header of that attempt).
    attempts = models.IntegerField(default=0)
    started_token = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "step", "retry"]
        constraints = [models.UniqueConstraint(fields=["run", "step", "retry"], name="uniq_tool_call_step")]
        indexes = [models.Index(fields=["status", "tool"])]

    def __str__(self) -> str:
        return f"{self.tool} #{self.step}.{self.retry} ({self.status})"

    @property
    def effect_key(self) -> str:
        """The idempotency key of this call: stable across takeovers (no attempt, no fence)."""
        return str(self.id)


class Approval(models.Model):
    """A person's decision a tool call waits for. At most one per call; the first decision wins."""

    class Reason(models.TextChoices):
        POLICY = "policy"  # the tool (or its policy) requires it
        OUTCOME_UNKNOWN = "outcome_unknown"  # call a `once` tool again after its outcome was lost?

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        EXPIRED = "expired"

    call = models.OneToOneField(ToolCall, on_delete=models.CASCADE, primary_key=True, related_name="approval")
    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="approvals")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="approvals")
    reason = models.CharField(max_length=32, choices=Reason.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    expires_at = models.DateTimeField()
    # The answering socket's client_id, `timeout`, or `admin`.
    decided_by = models.CharField(max_length=64, blank=True, default="")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "expires_at"])]

    def __str__(self) -> str:
        return f"approval of {self.call_id} ({self.status})"


class ModelCall(models.Model):
    """A completed model request of a run (an LLM call): recorded when its response completed,
    so a continued run replays the response instead of sending (and paying for) it again."""

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="model_calls")
    # The agent's n-th model request in this run (0-based).
    index = models.IntegerField()
    # sha256 of the request body: a replay with another request is counted (a deploy changed it).
    request_hash = models.CharField(max_length=64)
    # {"content": str, "tool_calls": [{"id", "name", "arguments"}], "finish_reason", "usage"?}
    response = models.JSONField()
    # Length of the run's text when the request was sent: its content follows from there.
    text_offset = models.IntegerField(default=0)
    fencing_token = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="uniq_model_call_index")]

    def __str__(self) -> str:
        return f"model call {self.index} of {self.run_id}"


class DemoEffect(models.Model):
    """What the demo agent's `demo.effect` tool writes when it is a `local` tool (no
    REALTIME_DEMO_EFFECT_URL): one row per effect. Deliberately without a unique key on the
    call, so that "exactly once" is the runtime's doing, and a test would see a second row."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="demo_effects")
    run_id = models.UUIDField()
    call_id = models.UUIDField()
    n = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"effect {self.n} of {self.run_id}"


class Connection(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="realtime_connections"
    )
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="connections"
    )
    client_id = models.CharField(max_length=64)
    channel_name = models.CharField(max_length=200)
    node = models.CharField(max_length=128)
    remote_addr = models.CharField(max_length=64, blank=True, default="")
    opened_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_code = models.IntegerField(null=True, blank=True)
    close_reason = models.CharField(max_length=64, blank=True, default="")
    resumed_from_seq = models.BigIntegerField(null=True, blank=True)
    delivered_seq = models.BigIntegerField(default=0)
    acked_seq = models.BigIntegerField(default=0)
    # Token renewals over this socket; refusals are kept so an operator sees a reused
    # (stolen?) refresh token or a cross-user attempt without reading logs.
    auth_refreshes = models.IntegerField(default=0)
    auth_refusals = models.IntegerField(default=0)
    last_auth_refusal = models.CharField(max_length=200, blank=True, default="")
    last_auth_refusal_at = models.DateTimeField(null=True, blank=True)
    # The standing of the access token the socket holds now (set at connect and at every
    # auth.refresh): its sign-in (`sid` claim) and its user's token generation (`gen` claim).
    # The periodic resync closes the socket when either was revoked (sessions_app/tokens.py).
    token_sid = models.UUIDField(null=True, blank=True)
    token_generation = models.IntegerField(default=0)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            # One open row per socket identity: a client's reconnect replaces its old socket
            # (4409). Two connects racing each other both find nothing to replace, so it is
            # the database that refuses the second insert; open_session then replaces it.
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=models.Q(closed_at__isnull=True),
                name="uniq_open_connection_per_client",
            ),
        ]
        indexes = [
            models.Index(fields=["node", "closed_at"]),
            models.Index(fields=["conversation", "client_id", "closed_at"]),
            models.Index(fields=["close_code"]),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.node} {self.client_id}"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class RevokedSignIn(models.Model):
    """A sign-in that was ended (logout): every token of its lineage is refused.

    A sign-in is one refresh-token lineage: the `sid` claim given at login and kept by every
    rotation and every access token derived from it. Rotation is not revocation: a rotated
    token is blacklisted, but its sign-in lives on in the token that replaced it."""

    sid = models.UUIDField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="revoked_sign_ins")
    revoked_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=200, blank=True, default="")

    def __str__(self) -> str:
        return f"sign-in {self.sid} of {self.user_id}"


class UserTokenGeneration(models.Model):
    """Raising a user's generation revokes every token issued before (`gen` claim lower than
    this; tokens without the claim are generation 0): "end every session of this user"."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="token_generation"
    )
    generation = models.IntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=200, blank=True, default="")

    def __str__(self) -> str:
        return f"tokens of {self.user_id}: generation {self.generation}"
