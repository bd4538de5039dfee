"""No published key signs anything, and no server starts on a key nobody chose (issue 24, item 1).

- Without SECRET_KEY every process makes its own random key: the development key that used to
  be in the repository verifies nothing.
- `python -m realtime.serve` and `manage.py run_agents` refuse to start without SECRET_KEY,
  with a message that says how to make one; DJANGO_DEBUG=1 lets a developer start one anyway.
- Production (`TETHER_PRODUCTION=1`) needs SECRET_KEY and a JWT_SIGNING_KEY of its own.
- `make demo` (scripts/demo.sh) generates a key once, keeps it in a file only its owner reads,
  and hands it to the server."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt
import pytest
from django.conf import settings

from sessions_app import tokens
from tests.support.daphne_nodes import ROOT
from tests.support.ports import free_port

# The key that shipped in project/settings.py until issue 24.
PUBLISHED_DEV_KEY = "insecure-dev-only-secret-key-set-SECRET_KEY-in-production"
KEY_VARIABLES = ("SECRET_KEY", "JWT_SIGNING_KEY", "DJANGO_DEBUG", "TETHER_PRODUCTION")


def _env(**extra: str) -> dict[str, str]:
    """This environment without any key; a server started in it finds no database tables (it
    logs that and keeps going) and registers under this test run's Redis prefix."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    return {**env, "DJANGO_SETTINGS_MODULE": "project.settings", "LOG_LEVEL": "WARNING",
            "DATABASE_URL": f"sqlite:///{tempfile.gettempdir()}/tether-keys-test-{os.getpid()}.sqlite3",
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, **extra}


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(**env), capture_output=True,
                          text=True, timeout=60)


def test_a_token_signed_with_the_once_published_dev_key_is_refused():
    forged = jwt.encode({"token_type": "access", "user_id": 1, "exp": int(time.time()) + 300, "jti": "x"},
                        PUBLISHED_DEV_KEY, algorithm="HS256")
    with pytest.raises(tokens.InvalidToken):
        tokens.verify_access_token(forged)


def test_without_secret_key_each_process_has_its_own_random_key():
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    first, second = _python(code), _python(code)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    keys = {first.stdout.strip(), second.stdout.strip()}
    assert len(keys) == 2 and PUBLISHED_DEV_KEY not in keys
    assert all(len(k) >= 50 for k in keys)


def _wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_the_server_refuses_to_start_without_secret_key():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "realtime.serve"], cwd=ROOT, env=_env(PORT=str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        code = _wait_exit(proc, 30)
        assert code is not None, "the server started without SECRET_KEY"
        output = proc.stdout.read()
        assert code != 0 and "refuses to start without SECRET_KEY" in output, output
        assert "secrets.token_urlsafe" in output and "make demo" in output, output
    finally:
        proc.kill()
        proc.wait(10)


def test_the_agent_worker_refuses_to_start_without_secret_key():
    proc = subprocess.run([sys.executable, "manage.py", "run_agents"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "run_agents refuses to start without SECRET_KEY" in proc.stderr, proc.stderr


def test_with_django_debug_the_server_starts_on_a_random_key_and_says_so():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "realtime.serve"], cwd=ROOT,
                            env=_env(PORT=str(port), DJANGO_DEBUG="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "not listening after 30 s"
            time.sleep(0.1)
    finally:
        proc.kill()
        output = proc.communicate(timeout=10)[0]
    assert "no SECRET_KEY set; using a random key for this process only" in output, output


@pytest.mark.parametrize("jwt_key", [None, "same"])
def test_production_needs_a_jwt_signing_key_of_its_own(jwt_key):
    secret = "s" * 60
    env = {"TETHER_PRODUCTION": "1", "SECRET_KEY": secret}
    if jwt_key is not None:
        env["JWT_SIGNING_KEY"] = secret
    result = _python("import django; django.setup()", **env)
    assert result.returncode != 0
    assert "JWT_SIGNING_KEY must be set, and differ from SECRET_KEY" in result.stderr, result.stderr


def test_production_refuses_to_start_without_secret_key():
    result = _python("import django; django.setup()", TETHER_PRODUCTION="1")
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr, result.stderr


def test_production_signs_tokens_with_the_jwt_signing_key():
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.SIMPLE_JWT['SIGNING_KEY'])")
    result = _python(code, TETHER_PRODUCTION="1", SECRET_KEY="s" * 60, JWT_SIGNING_KEY="j" * 60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "j" * 60


def test_make_demo_generates_a_key_once_keeps_it_private_and_passes_it_to_the_server(tmp_path):
    """scripts/demo.sh with a stand-in interpreter that records what the server was given."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    seen = tmp_path / "seen"
    fake = venv / "bin" / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n'
        f'if [ "$1" = "-m" ]; then echo "$SECRET_KEY" >> {seen}; fi\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    key_file = tmp_path / "demo-key"
    env = _env(VENV=str(venv), TETHER_DEMO_KEY_FILE=str(key_file))
    for _ in range(2):
        result = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    given = Path(seen).read_text().split()
    assert len(given) == 2 and given[0] == given[1] == key_file.read_text().strip()
    assert len(given[0]) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    ignored = subprocess.run(["git", "check-ignore", "-q", ".tether-demo-secret-key"], cwd=ROOT)
    assert ignored.returncode == 0, "the demo's key file must be gitignored"
