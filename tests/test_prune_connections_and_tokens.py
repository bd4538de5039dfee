"""Connection rows and refresh tokens are pruned (issue 24, item 7): before, every socket left a
row and every refresh two, forever. `manage.py prune_connections_and_tokens` deletes connection
rows closed more than REALTIME_RETENTION_CONNECTIONS_DAYS ago (never an open one), refresh
tokens past their expiry with their blacklist entries, and revoked sign-ins none of whose tokens
can still be valid; a revoked sign-in still within that window is kept, so its tokens stay
refused."""

import io
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from sessions_app import services, tokens
from sessions_app.models import Connection, RevokedSignIn

pytestmark = pytest.mark.django_db


def _connection(user, conversation, closed_days_ago: float | None) -> Connection:
    row = Connection.objects.create(conversation=conversation, user=user, client_id=str(uuid.uuid4()),
                                    channel_name=f"ws.{uuid.uuid4().hex}", node="n1")
    if closed_days_ago is not None:
        Connection.objects.filter(pk=row.pk).update(closed_at=timezone.now() - timedelta(days=closed_days_ago),
                                                    close_code=1000)
    return row


def test_prunes_old_closed_connections_expired_tokens_and_spent_revocations(settings, user):
    settings.REALTIME_RETENTION_CONNECTIONS_DAYS = 30
    conversation = services.create_conversation(user.pk)
    old, recent, still_open = (_connection(user, conversation, d) for d in (31, 29, None))
    Connection.objects.filter(pk=still_open.pk).update(opened_at=timezone.now() - timedelta(days=90))

    expired, live = RefreshToken.for_user(user), RefreshToken.for_user(user)
    OutstandingToken.objects.filter(jti=expired["jti"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired.blacklist()
    live.blacklist()
    spent, fresh = uuid.uuid4(), uuid.uuid4()
    for sid in (spent, fresh):
        tokens.revoke_sign_in(user.pk, str(sid))
    lifetime = settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"] + settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    RevokedSignIn.objects.filter(sid=spent).update(revoked_at=timezone.now() - lifetime - timedelta(seconds=1))

    out = io.StringIO()
    call_command("prune_connections_and_tokens", stdout=out)
    assert out.getvalue().strip() == "pruned 1 closed connections, 1 expired refresh tokens and 1 revoked sign-ins"
    assert set(Connection.objects.values_list("pk", flat=True)) == {recent.pk, still_open.pk}
    assert list(OutstandingToken.objects.values_list("jti", flat=True)) == [live["jti"]]
    assert BlacklistedToken.objects.count() == 1
    assert list(RevokedSignIn.objects.values_list("sid", flat=True)) == [fresh]
    assert old.pk not in set(Connection.objects.values_list("pk", flat=True))
