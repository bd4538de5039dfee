"""A password change ends every sign-in of its user (issue 24, item 4).

Whoever changes a password (the admin's password form, `manage.py changepassword`, a
password-reset or password-change view: each calls `set_password` and saves) assumes the old
one may be known to someone else, so every token issued so far must stop working: REST at
once, open sockets at their node's next resync (within REALTIME_RESYNC_INTERVAL). The
revocation is written right after the new hash (in the caller's transaction when there is one).

`set_password` leaves the new password in `_password` until the save is done; Django's own
re-hash on login (a hasher upgrade: same password) clears it first, so an upgrade revokes
nothing. Creating a user revokes nothing either: no token of it exists."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save

from sessions_app import tokens


def revoke_on_password_change(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if created or getattr(instance, "_password", None) is None:
        return
    tokens.revoke_user_sessions(instance.pk, "password changed")


def connect() -> None:
    post_save.connect(revoke_on_password_change, sender=get_user_model(), dispatch_uid="tether-password-revokes")
