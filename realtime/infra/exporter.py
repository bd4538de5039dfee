"""Serving the metrics of realtime/core/metrics.py: `/metrics` on every daphne node, and a port of
its own for each `manage.py run_agents` worker (docs/operations.md "Metrics").

Access rule, as operators expect of an exporter that reveals traffic: a scrape is allowed
from METRICS_ALLOWED_NETWORKS (default: loopback only), or from anywhere with
`Authorization: Bearer <METRICS_TOKEN>` when a token is set. The address checked is the
client behind a trusted proxy (realtime.infra.proxies), never the balancer's own address: with a
local balancer every request would otherwise come from loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from realtime.infra.proxies import request_client

log = logging.getLogger(__name__)


def scrape_allowed(client: str, authorization: str) -> bool:
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics on a daphne node."""
    if not scrape_allowed(request_client(request.META), request.headers.get("Authorization", "")):
        return HttpResponse("metrics: not allowed from this address; set METRICS_TOKEN or "
                            "METRICS_ALLOWED_NETWORKS\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the stdlib's parameter name
        """Scrapes every few seconds would flood the worker's log."""


def _guarded_app():
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict, start_response):
        if not scrape_allowed(request_client(environ), environ.get("HTTP_AUTHORIZATION", "")):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"metrics: not allowed from this address\n"]
        return metrics_app(environ, start_response)

    return app


def serve_worker_metrics(bind: str, port: int) -> ThreadingWSGIServer:
    """Starts the exporter of a `run_agents` worker in a daemon thread; returns the server
    (its `server_port` is the real port when `port` is 0)."""
    server = make_server(bind, port, _guarded_app(), ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True).start()
    log.info("metrics of this worker at http://%s:%d/metrics", bind, server.server_port)
    return server
