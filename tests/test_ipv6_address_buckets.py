"""Per-address limits count an IPv6 client by its /64 (issue 24, item 7): a subscriber is usually
given a whole /64 and could take a fresh address for every attempt. IPv4 (also mapped into
IPv6) is counted by the address. Sockets (REALTIME_RATE_CONNECT_IP) and the REST throttles
(API_THROTTLE_TOKEN_IP, API_THROTTLE_REFRESH_IP) follow the same rule
(realtime.infra.proxies.address_bucket)."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from realtime.infra.proxies import address_bucket
from tests.support.ws import WSClient


@pytest.mark.pure
@pytest.mark.parametrize(("address", "bucket"), [
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("198.51.100.7", "198.51.100.7"),
    ("", ""),
    ("not-an-address", "not-an-address"),
])
def test_address_buckets(address, bucket):
    assert address_bucket(address) == bucket


async def _outcome(app, token: str, address: str) -> str:
    client = WSClient(app, client_addr=(address, 4000))
    await client.open()
    await client.send({"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
                       "client_id": str(uuid.uuid4())})
    frame = await client.recv()
    return frame["type"] if frame["type"] == "ready" else frame["code"]


@pytest.mark.django_db(transaction=True)
async def test_socket_connects_from_one_ipv6_64_share_a_bucket(settings, node_app, token):
    settings.REALTIME_RATE_CONNECT_IP = (2, 600)
    outcomes = [await _outcome(node_app, token, f"2001:db8:7:7::{i}") for i in range(1, 4)]
    assert outcomes == ["ready", "ready", "rate_limited"]
    assert await _outcome(node_app, token, "2001:db8:7:8::1") == "ready"


@pytest.mark.django_db
def test_login_attempts_from_one_ipv6_64_share_a_bucket(settings, user):
    settings.API_THROTTLE_TOKEN_IP = "2/min"

    def login(address: str) -> int:
        return Client(REMOTE_ADDR=address).post("/api/auth/token/", {"username": "x", "password": "y"},
                                                content_type="application/json").status_code

    assert [login(f"2001:db8:9:9::{i}") for i in range(1, 4)] == [401, 401, 429]
    assert login("2001:db8:9:a::1") == 401
