"""The reference deployment in deploy/ is consistent with itself and with the settings: no
container engine runs here, so compose.yaml is parsed and checked, and haproxy.cfg is checked
by haproxy itself (tests/e2e/test_haproxy.py runs it for real)."""

import re
import subprocess
from pathlib import Path

import yaml
from django.conf import settings

from tests.support.haproxy import CONFIG, haproxy_or_skip
from tests.support.tls import self_signed

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
HAPROXY = CONFIG.read_text()
README = (ROOT / "README.md").read_text()


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", value).groups()
    return float(number) * {"ms": 0.001, "s": 1, "m": 60, None: 0.001}[unit]


def _default(name: str) -> str:
    return re.search(r'"\$\{' + name + r'-([^}]+)\}"', HAPROXY).group(1)


def test_compose_has_two_nodes_one_worker_postgres_redis_and_haproxy():
    services = COMPOSE["services"]
    assert {"postgres", "redis", "haproxy", "node1", "node2", "agents", "migrate"} == set(services)
    nodes = [name for name, s in services.items() if s.get("image") == "tether:local" and "command" not in s]
    assert sorted(nodes) == ["node1", "node2"]
    assert "run_agents" in services["agents"]["command"]
    env = {name: services[name]["environment"] for name in (*nodes, "agents", "migrate")}
    shared = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
    assert all(env[n][k] == env["node1"][k] for n in env for k in shared)
    assert len({env[n].get("REALTIME_NODE_ID") for n in ("node1", "node2", "agents")}) == 3
    assert all(env[n]["REALTIME_RUN_AGENTS_IN_SERVER"] == "0" for n in nodes)


def test_compose_pairs_the_balancer_with_trusted_proxies_and_drain_timing():
    services = COMPOSE["services"]
    haproxy = services["haproxy"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    address = haproxy["networks"]["backend"]["ipv4_address"]
    for name in ("node1", "node2"):
        assert services[name]["environment"]["REALTIME_TRUSTED_PROXIES"] == address
        # Compose must wait for the drain: the grace for runs plus the socket waves.
        assert _seconds(services[name]["stop_grace_period"]) > settings.REALTIME_DRAIN_GRACE + 5
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
    assert (ROOT / "deploy" / "haproxy.cfg").exists()


def test_every_variable_compose_sets_is_a_documented_setting():
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", README, re.M))
    documented |= {v for row in re.findall(r"^\| `([A-Z0-9_]+)` / `([A-Z0-9_]+)`", README, re.M) for v in row}
    for name in ("node1", "node2", "agents"):
        for variable in COMPOSE["services"][name]["environment"]:
            assert variable in documented, f"{variable} (compose.yaml, {name}) is not in README's configuration table"


def test_haproxy_cfg_rules():
    # Tunnel (WebSocket) timeout above the nodes' heartbeat timeout.
    assert _seconds(_default("TETHER_TUNNEL_TIMEOUT")) > settings.REALTIME_HEARTBEAT_TIMEOUT
    assert "http-check send meth GET uri /readyz" in HAPROXY and "option httpchk" in HAPROXY
    # No stickiness of any kind.
    assert not re.search(r"^\s*(stick|cookie|balance\s+(source|uri|hdr))", HAPROXY, re.M)
    # Our X-Forwarded-For only.
    lines = [line.strip() for line in HAPROXY.splitlines()]
    assert lines.index("http-request del-header X-Forwarded-For") < lines.index("option forwardfor")
    # /metrics is refused however it is spelled: the rule reads the decoded path.
    assert re.search(r"http-request deny .*path,url_dec -m beg /metrics", HAPROXY)
    # TLS ends at the balancer; plain HTTP only redirects; the nodes learn the scheme from here.
    assert re.search(r"bind \S+ ssl crt ", HAPROXY) and "http-request redirect scheme https" in HAPROXY
    assert "http-request set-header X-Forwarded-Proto https" in HAPROXY


def test_haproxy_accepts_the_config(tmp_path):
    env = {"TETHER_NODE1": "127.0.0.1:8001", "TETHER_NODE2": "127.0.0.1:8002", "PATH": "/usr/sbin:/usr/bin:/bin",
           "TETHER_TLS_CERT": str(self_signed(tmp_path))}
    check = subprocess.run([haproxy_or_skip(), "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_balancer_speaks_tls_with_a_certificate_made_locally(tmp_path):
    haproxy = COMPOSE["services"]["haproxy"]
    assert "./certs:/usr/local/etc/haproxy/certs:ro" in haproxy["volumes"]
    assert {"443:8443", "80:8080"} <= set(haproxy["ports"])
    assert COMPOSE["services"]["node1"]["environment"]["REALTIME_PUBLIC_WS_URL"].startswith("wss://")
    made = subprocess.run(["bash", str(ROOT / "deploy" / "make-dev-cert.sh")], capture_output=True, text=True,
                          env={"TETHER_CERT_DIR": str(tmp_path), "PATH": "/usr/sbin:/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr
    env = {"TETHER_NODE1": "127.0.0.1:8001", "TETHER_NODE2": "127.0.0.1:8002", "PATH": "/usr/sbin:/usr/bin:/bin",
           "TETHER_TLS_CERT": str(tmp_path / "tether.pem")}
    check = subprocess.run([haproxy_or_skip(), "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # No private key is committed anywhere, and the dev certificate's folder is ignored.
    tracked = subprocess.run(["git", "grep", "-lE", "-----BEGIN( [A-Z]+)? PRIVATE KEY-----"], cwd=ROOT,
                             capture_output=True, text=True)
    assert tracked.stdout.strip() == "", tracked.stdout
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/certs/tether.pem"], cwd=ROOT)
    assert ignored.returncode == 0
