"""Production entry point: `python -m realtime.serve` runs daphne with this project's
WebSocket settings (protocol pings, frame limits, the lingering close of
`realtime.server.daphne_server`) taken from the environment."""

from __future__ import annotations

import gc
import os
import sys

from project.env import env_float, env_int, env_str


def listen_endpoint(interface: str, port: int, backlog: int) -> str:
    """A Twisted endpoint description; colons of an IPv6 interface must be escaped."""
    escaped = interface.replace(":", "\\:")
    return f"tcp:port={port}:interface={escaped}:backlog={backlog}"


def daphne_args(argv: list[str] | None = None) -> list[str]:
    max_frame = env_int("REALTIME_MAX_FRAME_BYTES", 64 * 1024)
    args = [
        # An endpoint string instead of --bind/--port, for the listen backlog: Twisted's
        # default of 50 turned a reconnect storm of 1,000 clients into SYN retransmits
        # (seconds of backoff each) on a single node.
        "--endpoint", listen_endpoint(env_str("BIND", "127.0.0.1"), env_int("PORT", 8000),
                                      env_int("DAPHNE_BACKLOG", 2048)),
        # Protocol-level pings find dead peers even when a client library never sends frames.
        "--ping-interval", str(env_int("DAPHNE_PING_INTERVAL", 20)),
        "--ping-timeout", str(env_int("DAPHNE_PING_TIMEOUT", 30)),
        # Frames up to twice the app limit reach the app, which answers with an error frame
        # and 4413; anything larger is cut by daphne itself with 1009.
        "--websocket-max-message-size", str(2 * max_frame),
        "--application-close-timeout", str(env_int("DAPHNE_APPLICATION_CLOSE_TIMEOUT", 10)),
        "--websocket_connect_timeout", "10",
    ]
    if env_str("LOG_FORMAT", "plain") == "json":
        # Daphne's access log is plain text on stdout: with JSON logs the consumer's
        # "connection ready/closed" lines and the balancer's log take its place.
        args.extend(["--verbosity", "0"])
    if env_str("DAPHNE_PROXY_HEADERS", "0") in ("1", "true", "yes"):
        args.append("--proxy-headers")
    args.extend(argv or [])
    args.append("project.asgi:application")
    return args


def close_handshake_timeout() -> float:
    """Seconds a server-side close lingers (reading and discarding) for the client's close
    frame, then the connection is reset. Autobahn's default of 1 s is short for a client on a
    slow link still sending a refused 1 MiB frame; 5 s lets it finish from 2 Mbit/s up."""
    return env_float("DAPHNE_CLOSE_HANDSHAKE_TIMEOUT", 5.0)


def freeze_startup_heap() -> int:
    """Moves every object alive now (Django, the apps, the node: what a process loads at its
    start and keeps) out of the collector's sight; returns how many were frozen.

    Why (issue 22): a full collection walks every tracked object, and nearly all of them are the
    start's, never garbage. With 500 streams the node's full collections took 44-74 ms each,
    eight in a 12 s run, each a stall of every stream (measured with a `gc.callbacks` timer);
    frozen, 12-29 ms. The p99 of a token's delay is made of such stalls: 1% of the tokens is two
    coalescing windows of 500 streams. A collection first, so that what is frozen is only what
    is alive (CPython's own advice for `gc.freeze`)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.core.exceptions import ImproperlyConfigured

    from project.keys import require_explicit_keys

    try:
        require_explicit_keys("python -m realtime.serve")
    except ImproperlyConfigured as exc:
        raise SystemExit(str(exc)) from None
    import daphne.server  # noqa: F401 - installs Twisted's asyncio reactor before anything else picks one
    from django.conf import settings

    from project.asgi import node
    from realtime.server.daphne_server import TetherCommandLineInterface
    from realtime.server.drain import install_on_daphne

    install_on_daphne(node, grace=settings.REALTIME_DRAIN_GRACE)
    cli = TetherCommandLineInterface(close_handshake_timeout=close_handshake_timeout())
    freeze_startup_heap()
    cli.run(daphne_args(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
