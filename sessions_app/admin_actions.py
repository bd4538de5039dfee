"""Operators' actions in the admin. Each one goes through a service (the same writes the
protocol makes), is recorded in the admin's history (LogEntry) and leaves the same trace as
the automatic path: a disconnected socket's row is closed 4012 `operator_disconnect`, a
cancelled run ends with `agent.failed` `cancelled: true` in its conversation's log, and a
user whose sessions an operator ended is revoked exactly as by `POST /api/auth/logout-all/`
(services.revoke_user_sessions: every refresh token blacklisted, every token issued so far
refused, open sockets closed 4401 at their node's next resync). An operator's decision on a
pending approval is a person's decision like a socket's `approval.respond`
(services.resolve_approval, `by` = `admin`): `approval.resolved` in the log, and the run queued
again for whichever node claims it."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from django.contrib import admin, messages

from realtime.fanout.kick import kick_workers
from realtime.fanout.publish import publish_committed, tell
from sessions_app import services

log = logging.getLogger(__name__)


def may_sign_users_out(user) -> bool:
    """Ending a user's sessions is a change to that user: it needs `auth.change_user` (the user
    model's change permission), whichever admin page offers it. A staff user allowed to change
    connections only could otherwise sign out a superuser (issue 24)."""
    from django.contrib.auth import get_user_model

    opts = get_user_model()._meta
    return user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


class OperatorActions:
    """Read-only admins still offer actions to users allowed to change the model."""

    def has_operate_permission(self, request) -> bool:
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def has_sign_out_permission(self, request) -> bool:
        return may_sign_users_out(request.user)


@admin.action(description="Disconnect (the client resumes at once, on any node)", permissions=["operate"])
def disconnect_connections(modeladmin, request, queryset) -> None:
    connections = list(queryset.filter(closed_at__isnull=True))
    closed = services.disconnect_connections([c.pk for c in connections])
    for conversation_id, addresses in closed.items():
        # Best effort (logged there): the rows are closed, so the node's next resync ends them.
        async_to_sync(tell)(conversation_id, "disconnect", addresses)
    for connection in connections:
        modeladmin.log_change(request, connection, "disconnected by an operator (4012, client resumes)")
    count = sum(map(len, closed.values()))
    modeladmin.message_user(request, f"{count} connection(s) disconnected; their clients resume.", messages.SUCCESS)


@admin.action(description="Cancel (the run ends with agent.failed, cancelled)", permissions=["operate"])
def cancel_runs(modeladmin, request, queryset) -> None:
    outcomes: dict[str, int] = {}
    for run in queryset:
        try:
            cancel = services.request_cancel(run.conversation_id, run.pk, by="admin")
        except services.ConversationNotFound:
            outcomes["gone"] = outcomes.get("gone", 0) + 1
            continue
        async_to_sync(publish_committed)(cancel)  # the agent.failed of a queued run
        outcome = cancel.outcome
        if outcome in ("cancelled", "cancelling"):
            modeladmin.log_change(request, run, f"cancel requested by an operator ({outcome})")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))
    modeladmin.message_user(
        request, f"Runs: {summary} (a running run stops at its owner's next write or lease renewal).",
        messages.SUCCESS,
    )


def _decide_approvals(modeladmin, request, queryset, decision: str) -> None:
    """Each approval through services.resolve_approval, as a socket's `approval.respond`: the
    first decision wins (a pending one past its time is found `expired`), and a decided one is
    left as it is. What was decided is published, and agent workers are kicked; nodes that run
    agents themselves find the queued run at their next sweep (REALTIME_RUN_SWEEP_INTERVAL)."""
    outcomes: dict[str, int] = {}
    for approval in queryset:
        answer = services.resolve_approval(approval.conversation_id, approval.call_id, decision, "admin")
        if answer.events:
            async_to_sync(publish_committed)(answer)
            async_to_sync(kick_workers)(str(approval.conversation_id))
        if answer.outcome == "resolved":
            modeladmin.log_change(request, approval, f"{answer.decision} by an operator")
            what = str(answer.decision)
        elif answer.outcome == "already_decided":
            what = f"already {answer.decision}"
        else:
            what = "gone"
        outcomes[what] = outcomes.get(what, 0) + 1
    summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))
    modeladmin.message_user(
        request, f"Approvals: {summary} (a decided run continues on whichever node claims it).", messages.SUCCESS,
    )


@admin.action(description="Approve (the call is made; the run continues)", permissions=["operate"])
def approve_approvals(modeladmin, request, queryset) -> None:
    _decide_approvals(modeladmin, request, queryset, "approve")


@admin.action(description="Deny (the call is never made; the run continues without it)", permissions=["operate"])
def deny_approvals(modeladmin, request, queryset) -> None:
    _decide_approvals(modeladmin, request, queryset, "deny")


def _end_sessions(modeladmin, request, user_ids: set) -> None:
    from django.contrib.auth import get_user_model
    from django.core.exceptions import PermissionDenied

    if not may_sign_users_out(request.user):  # the action's permission, checked again where it acts
        raise PermissionDenied

    users = list(get_user_model().objects.filter(pk__in=user_ids))
    blacklisted = 0
    for user in users:
        done = services.revoke_user_sessions(user.pk, reason=f"ended by operator {request.user.get_username()}")
        blacklisted += done.refresh_tokens_blacklisted
        modeladmin.log_change(request, user, f"all sessions ended by an operator ({done.refresh_tokens_blacklisted} "
                                             "refresh tokens blacklisted; open sockets close 4401 at the next resync)")
    modeladmin.message_user(
        request, f"Ended every session of {len(users)} user(s): {blacklisted} refresh tokens blacklisted; their "
        "open sockets close within REALTIME_RESYNC_INTERVAL.", messages.SUCCESS,
    )


@admin.action(description="End every session (sockets and refresh tokens: sign in again)", permissions=["sign_out"])
def end_user_sessions(modeladmin, request, queryset) -> None:
    _end_sessions(modeladmin, request, set(queryset.values_list("pk", flat=True)))


@admin.action(description="End every session of these connections' users", permissions=["sign_out"])
def end_connection_users_sessions(modeladmin, request, queryset) -> None:
    _end_sessions(modeladmin, request, set(queryset.values_list("user_id", flat=True)))
