"""Operators' view: conversations, the event log ("queued messages"), runs, connections, and
what agents do (tool calls, approvals, the demo's effects). Everything that carries seq or
ownership state is read-only: editing it would break the invariants the protocol relies on."""

import json

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Case, Count, F, IntegerField, Max, OuterRef, Subquery, Value, When

from sessions_app import admin_actions, services
from sessions_app.models import AgentRun, Approval, Connection, Conversation, DemoEffect, Event, Message, ToolCall


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Asked from this model's own pages (delete view, bulk action), only `deletable` rows
        # go. Asked while a whole conversation (or its owner) is deleted, the rows go with it:
        # a log that disappears entirely leaves no hole, so that cascade is not blocked.
        match = getattr(request, "resolver_match", None)
        if (match is None or getattr(match.func, "model_admin", None) is self) and not self.deletable(obj):
            return False
        return super().has_delete_permission(request, obj)

    def deletable(self, obj) -> bool:
        """A deleted event is a hole in the log that resuming clients cannot get past; a
        deleted message or run breaks "one user message, one run". Retention
        (prune_events) is the only way events leave, and only as a prefix of a log."""
        return False


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["seq", "role", "text", "client_msg_id", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-seq"]
    max_num = 0


class RunInline(admin.TabularInline):
    model = AgentRun
    fields = ["id", "status", "node", "claims", "next_index", "created_at", "finished_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "owner", "last_seq", "acked_seq", "updated_at"]
    list_filter = ["updated_at"]
    search_fields = ["id", "title", "owner__username"]
    readonly_fields = ["id", "owner", "last_seq", "acked_seq", "created_at", "updated_at"]
    inlines = [MessageInline, RunInline]

    def save_model(self, request, obj, form, change) -> None:
        # Only the fields the form edits: a full save wrote back the last_seq read when the
        # form was posted, undoing appends committed meanwhile (the next append then reused a
        # seq and failed on the unique constraint, for good).
        obj.save(update_fields=form.changed_data if change else None)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["conversation", "seq", "role", "short_text", "client_msg_id", "created_at"]
    list_filter = ["role"]
    search_fields = ["conversation__id", "text", "client_msg_id"]

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["conversation", "seq", "type", "created_at", "delivered", "acknowledged"]
    list_filter = ["type"]
    search_fields = ["conversation__id", "run_id"]
    list_select_related = ["conversation"]

    def get_queryset(self, request):
        delivered = (
            Connection.objects.filter(conversation=OuterRef("conversation"))
            .values("conversation")
            .annotate(m=Max("delivered_seq"))
            .values("m")
        )
        acked = (
            Connection.objects.filter(conversation=OuterRef("conversation"))
            .values("conversation")
            .annotate(m=Max("acked_seq"))
            .values("m")
        )
        return super().get_queryset(request).annotate(max_delivered=Subquery(delivered), max_acked=Subquery(acked))

    @admin.display(boolean=True)
    def delivered(self, obj: Event) -> bool:
        return obj.seq <= (obj.max_delivered or 0)

    @admin.display(boolean=True)
    def acknowledged(self, obj: Event) -> bool:
        # Open sockets' acks reach the conversation row only when they close (hot-path lock).
        return obj.seq <= max(obj.conversation.acked_seq, obj.max_acked or 0)


Event._meta.verbose_name = "queued message / event"
Event._meta.verbose_name_plural = "queued messages / events"


@admin.register(AgentRun)
class AgentRunAdmin(admin_actions.OperatorActions, ReadOnlyAdmin):
    actions = [admin_actions.cancel_runs]
    list_display = ["id", "conversation", "status", "node", "lease_expires_at", "fencing_token", "claims",
                    "next_index", "created_at", "started_at", "finished_at"]
    list_filter = ["status", "node"]
    search_fields = ["id", "conversation__id", "node"]
    # The row holds only the text folded in (models.AgentRun.text_upto); a running run's page
    # shows what it has committed so far, read from the log as a takeover would.
    exclude = ["text"]
    readonly_fields = ["committed_text"]

    @admin.display(description="text committed so far")
    def committed_text(self, obj: AgentRun) -> str:
        return services.committed_text(obj)


# --- what agents do: the tool journal, approvals, the demo's effects -----------------------
# Read-only like the log: a journal row edited by hand would make a continued run call a tool
# again, or skip one (services/tools.py owns every write). Approvals are decided through the
# actions below, which go through the same service as a socket's `approval.respond`.


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyAdmin):
    list_display = ["id", "tool", "effect", "status", "run", "step", "retry", "attempts", "started_token",
                    "created_at", "finished_at"]
    list_filter = ["status", "tool", "effect"]
    # By call id (the wire's `call_id`, also its effect key) or run id.
    search_fields = ["id", "run__id", "conversation__id"]
    list_select_related = ["run"]
    readonly_fields = ["effect_key"]

    @admin.display(description="effect key (Idempotency-Key)")
    def effect_key(self, obj: ToolCall) -> str:
        return obj.effect_key


@admin.register(Approval)
class ApprovalAdmin(admin_actions.OperatorActions, ReadOnlyAdmin):
    actions = [admin_actions.approve_approvals, admin_actions.deny_approvals]
    list_display = ["call_id", "tool", "arguments", "status", "reason", "expires_at", "decided_by", "decided_at",
                    "run", "conversation", "created_at"]
    list_filter = ["status", "reason"]
    search_fields = ["call__id", "run__id", "conversation__id", "decided_by"]
    list_select_related = ["call", "run", "conversation"]
    # Pending first, the soonest to expire first; then the decided ones, newest first.
    ordering = [
        Case(When(status=Approval.Status.PENDING, then=Value(0)), default=Value(1), output_field=IntegerField()).asc(),
        Case(When(status=Approval.Status.PENDING, then=F("expires_at"))).asc(nulls_last=True),
        "-created_at",
    ]

    @admin.display(description="tool", ordering="call__tool")
    def tool(self, obj: Approval) -> str:
        return obj.call.tool

    @admin.display(description="arguments")
    def arguments(self, obj: Approval) -> str:
        return json.dumps(obj.call.arguments, ensure_ascii=False)[:120]


@admin.register(DemoEffect)
class DemoEffectAdmin(ReadOnlyAdmin):
    """The demo agent's `local` effects (`effect K` without REALTIME_DEMO_EFFECT_URL): one row per
    effect, so a second row for one call would be a duplicate effect."""

    list_display = ["created_at", "n", "call_id", "run_id", "conversation"]
    search_fields = ["call_id", "run_id", "conversation__id"]
    list_select_related = ["conversation"]


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", "open"), ("closed", "closed")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(closed_at__isnull=True)
        if self.value() == "closed":
            return queryset.filter(closed_at__isnull=False)
        return queryset


class AuthRefusalFilter(admin.SimpleListFilter):
    title = "token refusals"
    parameter_name = "refusals"

    def lookups(self, request, model_admin):
        return [("yes", "refused at least once")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(auth_refusals__gt=0)
        return queryset


@admin.register(Connection)
class ConnectionAdmin(admin_actions.OperatorActions, ReadOnlyAdmin):
    actions = [admin_actions.disconnect_connections, admin_actions.end_connection_users_sessions]
    list_display = ["user", "conversation", "client_id", "node", "opened_at", "last_seen_at", "closed_at",
                    "close_code", "close_reason", "delivered_seq", "acked_seq", "auth_refreshes", "auth_refusals"]
    list_filter = [OpenFilter, AuthRefusalFilter, "node", "close_code", "close_reason"]
    search_fields = ["client_id", "user__username", "conversation__id", "remote_addr", "last_auth_refusal"]
    change_list_template = "admin/sessions_app/connection/change_list.html"

    def deletable(self, obj) -> bool:
        # Closed rows are history. An open row is a live socket's: without it the socket's acks
        # never reach the conversation and a dead node's reaper cannot free the socket's slot.
        return obj is None or obj.closed_at is not None

    def changelist_view(self, request, extra_context=None):
        # Aggregates over the whole table (not the page): why sockets end and where they live.
        summary = {
            "open_per_node": list(
                Connection.objects.filter(closed_at__isnull=True)
                .values("node").annotate(n=Count("id")).order_by("node")
            ),
            "closed_per_code": list(
                Connection.objects.filter(closed_at__isnull=False)
                .values("close_code", "close_reason").annotate(n=Count("id")).order_by("-n")[:20]
            ),
            "refused_refreshes": Connection.objects.filter(auth_refusals__gt=0).count(),
        }
        return super().changelist_view(request, {**(extra_context or {}), "summary": summary})


# Django's user admin, plus the operators' "end every session" (a real revocation).
admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class OperatorUserAdmin(admin_actions.OperatorActions, UserAdmin):
    actions = [admin_actions.end_user_sessions]
