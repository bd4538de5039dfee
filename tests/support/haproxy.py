"""Debian's haproxy on loopback, running the shipped deploy/haproxy.cfg (servers and timers
come from its "${NAME-default}" environment values), with TLS: a self-signed certificate made
for the run (tests/support/tls.py), clients trusting it alone."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from tests.support.executables import installed_or_skip, stop_process, wait_listening
from tests.support.ports import free_port
from tests.support.tls import client_context, self_signed

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "haproxy.cfg"


def haproxy_or_skip() -> str:
    """The haproxy executable (tests/support/executables.py: a skip outside CI, a failure under it)."""
    return installed_or_skip("haproxy")


class HAProxy:
    def __init__(self, nodes: list[int], **env: str):
        self.executable = haproxy_or_skip()
        self.port = free_port()  # TLS
        self.http_port = free_port()  # plain HTTP: redirects only
        self.cert = self_signed(Path(tempfile.mkdtemp(prefix="tether-tls-")))
        self.env = {
            **os.environ,
            "TETHER_LB_BIND": f"127.0.0.1:{self.port}",
            "TETHER_LB_HTTP_BIND": f"127.0.0.1:{self.http_port}",
            "TETHER_TLS_CERT": str(self.cert),
            "TETHER_NODE1": f"127.0.0.1:{nodes[0]}",
            "TETHER_NODE2": f"127.0.0.1:{nodes[1]}",
            "TETHER_DNS": "127.0.0.1:1",  # loopback addresses need no resolver
            "TETHER_LB_MAXCONN": "2000",  # within a test machine's descriptor limit
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="haproxy-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws/v1/"

    @property
    def http_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def plain_http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ssl_context(self):
        """A client context that trusts this balancer's certificate only."""
        return client_context(self.cert)

    def start(self, timeout: float = 10.0) -> HAProxy:
        check = subprocess.run([self.executable, "-c", "-f", str(CONFIG)], env=self.env, capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen([self.executable, "-db", "-f", str(CONFIG)], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_listening(self.proc, self.port, timeout, self.tail)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])
