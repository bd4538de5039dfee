"""Servers refuse to start on a key nobody chose (issue 24).

Without SECRET_KEY, settings make a random key for the process (nothing published with the
code signs anything). That is enough for a management command, but a server on it would hand
out tokens that no other node accepts and that die with the process: a misconfiguration that
looks like random sign-outs. So every server (an ASGI process through project/asgi.py, which
`python -m realtime.serve`, a bare `daphne project.asgi:application` and `manage.py runserver`
all load; `manage.py run_agents`) calls `require_explicit_keys` first. DJANGO_DEBUG=1 lets a
developer start one anyway, with a warning; `make demo` passes a key it generated and stored
(scripts/demo.sh)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

log = logging.getLogger("tether.keys")

HOW_TO_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def require_explicit_keys(server: str) -> None:
    """Raises ImproperlyConfigured unless SECRET_KEY was set (or DJANGO_DEBUG=1)."""
    if settings.SECRET_KEY_IS_EXPLICIT:
        return
    if settings.DEBUG:
        log.warning("%s: no SECRET_KEY set; using a random key for this process only (DJANGO_DEBUG=1): "
                    "its tokens die with it and no other node accepts them", server)
        return
    raise ImproperlyConfigured(
        f"{server} refuses to start without SECRET_KEY: set it (the same on every node and worker; "
        f"in production JWT_SIGNING_KEY too, a different one) to a long random value, e.g. "
        f"`{HOW_TO_MAKE_ONE}`. For a local try-out use `make demo` (it stores a generated key), "
        "or DJANGO_DEBUG=1."
    )
