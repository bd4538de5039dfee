"""Retention of the event log (`manage.py prune_events`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Max, Min, Q
from django.utils import timezone

from sessions_app.models import AgentRun, Event
from sessions_app.services.connections import reconcile_acks


@dataclass(frozen=True)
class PruneResult:
    acked_deleted: int
    unacked_deleted: int


def prune_events(
    now: datetime | None = None, acked_days: float | None = None, unacked_days: float | None = None
) -> PruneResult:
    """Deletes acknowledged events older than the acked window, and any event older than the
    (longer) unacked window, but only ever a prefix of each conversation's log: the cutoff of
    a conversation is the highest seq such that every event at or below it is eligible.

    Never a time cutoff alone: an event's `created_at` is not guaranteed to grow with its seq
    (logs written before it was, nodes with skewed clocks), and a cutoff that fell between such
    a pair would leave a hole that resuming clients cannot get past. The seq counter lives on
    the conversation, so pruning never lets a seq be reused either."""
    now = now or timezone.now()
    acked_days = settings.REALTIME_RETENTION_ACKED_DAYS if acked_days is None else acked_days
    unacked_days = settings.REALTIME_RETENTION_UNACKED_DAYS if unacked_days is None else unacked_days
    acked_cutoff = now - timedelta(days=acked_days)
    unacked_cutoff = now - timedelta(days=unacked_days)
    reconcile_acks()
    # An unfinished run's deltas stay whatever their age: its text is read from them until it is
    # folded in (models.AgentRun.text_upto).
    unfinished = AgentRun.objects.filter(status__in=AgentRun.UNFINISHED, text_upto__lt=F("next_index")).values("pk")
    acked_and_old = Q(created_at__lt=acked_cutoff, seq__lte=F("conversation__acked_seq"))
    old_enough = Q(created_at__lt=unacked_cutoff) | acked_and_old
    eligible = old_enough & ~Q(type="agent.delta", run_id__in=unfinished)
    bounds = (
        Event.objects.filter(conversation_id__in=Event.objects.filter(eligible).values("conversation_id"))
        .values("conversation_id")
        .annotate(
            first_kept=Min("seq"),
            first_ineligible=Min("seq", filter=~eligible),
            last=Max("seq"),
            acked=Max("conversation__acked_seq"),
        )
        .values_list("conversation_id", "first_kept", "first_ineligible", "last", "acked")
    )
    acked_deleted = unacked_deleted = 0
    for conversation_id, first_kept, first_ineligible, last, acked in bounds:
        cutoff = last if first_ineligible is None else first_ineligible - 1
        if cutoff < first_kept:
            continue
        # Eligibility only ever grows (time passes, acks move up), so the prefix found above
        # is still eligible now; events appended meanwhile are above it.
        log = Event.objects.filter(conversation_id=conversation_id)
        acked_deleted += log.filter(seq__lte=min(cutoff, acked)).delete()[0]
        unacked_deleted += log.filter(seq__gt=acked, seq__lte=cutoff).delete()[0]
    return PruneResult(acked_deleted=acked_deleted, unacked_deleted=unacked_deleted)


@dataclass(frozen=True)
class AuthPruneResult:
    connections_deleted: int
    tokens_deleted: int  # outstanding refresh tokens past their expiry (their blacklist entries go too)
    sign_ins_deleted: int  # revoked sign-ins no token of which can still be valid


def prune_connections_and_tokens(now: datetime | None = None, connection_days: float | None = None) -> AuthPruneResult:
    """Deletes what grows with every socket and every refresh, and is no use once old
    (`manage.py prune_connections_and_tokens`; issue 24):

    - closed connection rows closed more than REALTIME_RETENTION_CONNECTIONS_DAYS ago (open ones
      are never touched);
    - outstanding refresh tokens past their `exp`, with their blacklist entries: an expired
      token is refused for its expiry whether it is listed or not;
    - revoked sign-ins older than the longest a token issued before the revocation can live
      (REFRESH_TOKEN_LIFETIME, plus ACCESS_TOKEN_LIFETIME for an access token derived from the
      last refresh): every token of such a sign-in has expired.

    A user's token generation is kept (one row per user): it is what refuses their old tokens."""
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    from sessions_app.models import Connection, RevokedSignIn

    now = now or timezone.now()
    days = settings.REALTIME_RETENTION_CONNECTIONS_DAYS if connection_days is None else connection_days
    connections = Connection.objects.filter(closed_at__lt=now - timedelta(days=days)).delete()[1]
    tokens = OutstandingToken.objects.filter(expires_at__lt=now).delete()[1]
    lifetime = settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"] + settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    sign_ins = RevokedSignIn.objects.filter(revoked_at__lt=now - lifetime).delete()[1]
    return AuthPruneResult(
        connections_deleted=connections.get(Connection._meta.label, 0),
        tokens_deleted=tokens.get(OutstandingToken._meta.label, 0),
        sign_ins_deleted=sign_ins.get(RevokedSignIn._meta.label, 0),
    )
