"""ASGI entry point for daphne: `daphne project.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_http_app = get_asgi_application()

from project.keys import require_explicit_keys  # noqa: E402 - needs Django set up first

# Every ASGI server of this project loads this module: none starts on a key nobody chose.
require_explicit_keys("the ASGI server")

from realtime.node.runtime import NodeRuntime  # noqa: E402 - needs Django set up first
from realtime.server.routing import build_application  # noqa: E402

node = NodeRuntime()
application = build_application(django_http_app, node)
