"""Raw upstream errors do not reach clients (issue 24, item 7): the node list answers a generic
503 when the registry (Redis) is unreachable, with Redis' own words in the log only. (An agent's
upstream error: tests/test_openai_agent.py::test_upstream_failures_end_in_agent_failed, where
`agent.failed` carries a generic sentence and the run row the detail.)"""

import logging

import pytest
import redis

from realtime.infra import registry
from tests.test_rest_api import api

pytestmark = pytest.mark.django_db


def test_the_node_list_hides_redis_errors(monkeypatch, user, caplog):
    async def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 10.9.8.7:6379. Connection refused.")

    monkeypatch.setattr(registry, "live_nodes", unreachable)
    with caplog.at_level(logging.WARNING, logger="sessions_app.api"):
        response = api(user).get("/api/realtime/nodes/")
    assert response.status_code == 503
    assert response.json() == {"detail": "node registry unavailable; retry shortly"}
    assert "10.9.8.7" in caplog.text
