"""Free TCP ports on loopback, for servers a test starts (daphne nodes, haproxy, redis-server)
and for addresses where nothing must listen."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
