"""Revocation of tokens, kept apart from rotation. Design: docs/security.md, "Revocation".

Rotation blacklists each refresh token once it is used, so that a stolen, already-used token is
refused; the sign-in itself lives on in the token that replaced it. We found that reading
"blacklisted" as "revoked" closed live sockets after every ordinary refresh (a socket rotating
R0 -> R1 and the app later rotating R1 over REST; two tabs sharing one chain). So revocation is
its own record, and only these end tokens and sockets:

- a logout ends one sign-in: the `sid` claim, given at login and carried by every rotated
  refresh token and every access token derived from it (`RevokedSignIn`);
- "end every session of this user" (an operator, a password change) raises the user's token
  generation; tokens carrying a lower `gen` claim (none at all counts as 0) are refused
  (`UserTokenGeneration`);
- a deactivated user.

Rule: every path that accepts a token checks its standing with `check_standing`: `connect`
(services.open_session), `auth.refresh` on a socket (realtime.tokens), the REST refresh
serializer and REST authentication (sessions_app.auth_api), and the periodic resync of open
sockets (services.touch_connections, in bulk). Each call point is covered by a test in
tests/test_token_revocation.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from sessions_app.models import RevokedSignIn, UserTokenGeneration

User = get_user_model()

SID_CLAIM = "sid"
GENERATION_CLAIM = "gen"


class TokenRevoked(Exception):
    """The token is genuine but may no longer be used: its sign-in or every token of its user
    was revoked, or the user is unknown or deactivated."""


@dataclass(frozen=True)
class Standing:
    """What a token says about where it comes from: its sign-in and its generation."""

    user_id: str
    sid: str | None
    generation: int


def standing_of(claims: Any, user_id: Any) -> Standing:
    """Reads `sid` and `gen` from a token (or its payload dict). Unparseable values count as
    no sign-in and generation 0: such a token survives no revocation."""
    sid = claims.get(SID_CLAIM)
    try:
        sid = str(uuid.UUID(str(sid))) if sid is not None else None
    except ValueError:
        sid = None
    generation = claims.get(GENERATION_CLAIM, 0)
    if not isinstance(generation, int) or isinstance(generation, bool):
        generation = 0
    return Standing(user_id=str(user_id), sid=sid, generation=generation)


def current_generation(user_id: Any) -> int:
    return UserTokenGeneration.objects.filter(user_id=user_id).values_list("generation", flat=True).first() or 0


def stamp_new_sign_in(token: Any, user: Any) -> Any:
    """Gives a token minted at login its sign-in id and the user's current generation."""
    token[SID_CLAIM] = str(uuid.uuid4())
    token[GENERATION_CLAIM] = current_generation(user.pk)
    return token


def check_standing(standing: Standing) -> None:
    """Raises TokenRevoked unless the token may still be used. Two indexed
    reads; callers run it in a database thread."""
    active = User.objects.filter(pk=standing.user_id).values_list("is_active", flat=True).first()
    if active is None:
        raise TokenRevoked("unknown user")
    if not active:
        raise TokenRevoked("user is deactivated")
    if standing.generation < current_generation(standing.user_id):
        raise TokenRevoked("token was revoked (every session of this user was ended)")
    if standing.sid is not None and RevokedSignIn.objects.filter(sid=standing.sid).exists():
        raise TokenRevoked("token was revoked (signed out)")


def revoked_among(standings: list[Standing]) -> set[Standing]:
    """The bulk form of check_standing for the resync (deactivation is read there already)."""
    if not standings:
        return set()
    generations = dict(
        UserTokenGeneration.objects.filter(user_id__in={s.user_id for s in standings}).values_list(
            "user_id", "generation"
        )
    )
    generations = {str(k): v for k, v in generations.items()}
    sids = {s.sid for s in standings if s.sid}
    ended = set()
    if sids:
        ended = {str(sid) for sid in RevokedSignIn.objects.filter(sid__in=sids).values_list("sid", flat=True)}
    return {s for s in standings if s.generation < generations.get(s.user_id, 0) or (s.sid and s.sid in ended)}


def revoke_sign_in(user_id: Any, sid: str, reason: str = "signed out") -> bool:
    """Ends one sign-in (logout). Idempotent; returns False when it was already revoked."""
    _, created = RevokedSignIn.objects.get_or_create(sid=sid, defaults={"user_id": user_id, "reason": reason[:200]})
    return created


@dataclass(frozen=True)
class UserRevocation:
    generation: int
    refresh_tokens_blacklisted: int


def revoke_user_sessions(user_id: Any, reason: str = "all sessions ended") -> UserRevocation:
    """Ends every session of a user: every token issued so far is refused (generation raised),
    every outstanding refresh token is blacklisted, and open sockets close with 4401 at their
    next resync (within REALTIME_RESYNC_INTERVAL)."""
    with transaction.atomic():
        state, _ = UserTokenGeneration.objects.select_for_update().get_or_create(user_id=user_id)
        UserTokenGeneration.objects.filter(pk=state.pk).update(
            generation=F("generation") + 1, revoked_at=timezone.now(), reason=reason[:200]
        )
        state.refresh_from_db()
        outstanding = OutstandingToken.objects.filter(user_id=user_id, blacklistedtoken__isnull=True)
        blacklisted = BlacklistedToken.objects.bulk_create(
            [BlacklistedToken(token=t) for t in outstanding], ignore_conflicts=True
        )
    return UserRevocation(generation=state.generation, refresh_tokens_blacklisted=len(blacklisted))
