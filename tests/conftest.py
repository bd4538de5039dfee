from __future__ import annotations

import gc
import os
import uuid

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.core.asgi import get_asgi_application
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from realtime.infra import outage, transient
from realtime.infra.db import HANDED
from realtime.node.runtime import NodeRuntime
from realtime.server.routing import build_application
from tests.support.ws import close_all_clients

TEST_PREFIX = f"tether-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"


_used_redis = False


@pytest.fixture(scope="session", autouse=True)
def _isolated_infrastructure():
    """Own Redis keyspace for this run; no persistent DB connections in worker threads
    (PostgreSQL refuses to drop the test database while they linger)."""
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    settings.REDIS_KEY_PREFIX = TEST_PREFIX
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{TEST_PREFIX}:layer:"
    channel_layers.backends = {}
    yield
    if _used_redis:
        _delete_keyspace()


def _delete_keyspace() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        stale = list(client.scan_iter(match=f"{TEST_PREFIX}*", count=1000))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _fresh_log_throttle():
    """Every test sees the first warning of each kind (realtime/infra/transient.py lets one per second
    through), and no outage of the database or Redis left over by another (realtime/infra/outage.py)."""
    transient.THROTTLE.clear()
    outage.DATABASE.reset()
    outage.REDIS.reset()


@pytest.fixture(autouse=True)
def _fresh_keyspace(request, _isolated_infrastructure):
    """Every test starts from an empty keyspace. A test that kills a node on purpose leaves
    its slots and leases to expire on their own; the next test must not count them as its own.
    Tests marked `pure` (no server, Redis or database) run without Redis."""
    global _used_redis
    if request.node.get_closest_marker("pure") is not None:
        return
    _used_redis = True
    _delete_keyspace()


# The longest a database call of a stopped node may still take: the deadline cuts one that waits
# for the database (REALTIME_DB_TIMEOUT), and a test's gate holds one at most HOLD_LIMIT.
CALLS_END_LIMIT = 30.0


@pytest.fixture(autouse=True)
def _database_calls_ended():
    """After each test (its nodes stopped, before pytest-django empties the database): no
    database call of this process is left running. A call left running can deadlock the flush
    (realtime.infra.db.HandedCalls says how), or write into the next test's database."""
    yield
    if not HANDED.wait_idle(CALLS_END_LIMIT):
        pytest.fail(f"{HANDED.count} database calls still running {CALLS_END_LIMIT:g} s after the test")


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username=f"u{uuid.uuid4().hex[:8]}", password="pw-123456")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username=f"o{uuid.uuid4().hex[:8]}", password="pw-123456")


def access_for(user) -> str:
    return str(AccessToken.for_user(user))


def refresh_for(user) -> str:
    return str(RefreshToken.for_user(user))


@pytest.fixture
def token(user) -> str:
    return access_for(user)


@pytest.fixture
def agent_delay_ms() -> int:
    """The demo agent's pause between words under `fast_agent`; a module overrides this
    fixture for another pace."""
    return 1


@pytest.fixture
def fast_agent(settings, agent_delay_ms: int) -> None:
    """The demo agent without its production pace (REALTIME_DEMO_AGENT_DELAY_MS, 40 ms a word):
    in-process tests wait for whole answers. A module asks for it with
    `pytest.mark.usefixtures("fast_agent")`."""
    settings.REALTIME_DEMO_AGENT_DELAY_MS = agent_delay_ms


@pytest.fixture(params=["sql", "orm"])
def sql_or_orm(request, monkeypatch):
    """Runs a test of a service twice on this PostgreSQL database: through its plain-SQL path,
    and through its ORM reference (the path SQLite takes), picked by the connection's vendor."""
    if request.param == "orm":
        from django.db import connection

        monkeypatch.setattr(connection, "vendor", "sqlite")
    return request.param


@pytest.fixture
async def cluster():
    """Builds node applications sharing the database and Redis, as separate server
    processes would; every node is stopped at teardown."""
    nodes: list[NodeRuntime] = []
    http_app = get_asgi_application()
    # A fresh layer per test (each test has its own event loop): a test that failed half-way
    # can leave channels_redis' receive lock bound to its dead loop.
    channel_layers.backends = {}

    def make(node_id: str | None = None, **options):
        node = NodeRuntime(node_id or f"node-{len(nodes) + 1}", **options)
        nodes.append(node)
        return node, build_application(http_app, node)

    yield make
    await close_all_clients()
    for node in nodes:
        await node.stop(abandon=True)


@pytest.fixture
async def node_app(cluster):
    _, app = cluster("node-1")
    return app


def pytest_collection_modifyitems(config, items):
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's database setup, plus: before the test database is dropped, end the
    connections that channels' test communicator left open. It turns `close_old_connections`
    into a no-op while it waits for the application (channels.testing.application, a
    module-wide patch), so threads that ran the ORM meanwhile keep their connections:
    executor threads that ended with their test's event loop (their connections wait in
    collectable cycles) and asgiref's shared thread, which lives on. PostgreSQL refuses to drop
    the test database while any linger. Production code is not concerned: there the
    connections are closed after every call. Only tests that use the database set it up, so a
    run of `pure` tests needs no database."""
    yield
    gc.collect()
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture
def held_tools(settings):
    """The demo's tools replaced by in-process stand-ins that record every call and can hold
    one at a gate (tests/support/held_tools.py); their gates are opened at the end."""
    from tests.support.held_tools import CALLS, HELD_TOOLS

    settings.REALTIME_TOOLS = HELD_TOOLS
    CALLS.__init__()
    yield CALLS
    for gate in CALLS.gates.values():
        gate.open()


@pytest.fixture
def tool_invariants(transactional_db):
    """After the test: every conversation's log and journal keep the rules every tool test
    proves (tests/support/tool_invariants.py), whatever the test checked itself."""
    from sessions_app.models import Conversation
    from tests.support.tool_invariants import check_conversation_tools

    yield
    for conversation_id in Conversation.objects.values_list("id", flat=True):
        check_conversation_tools(str(conversation_id), finished=False)
