"""The HTTP endpoints the client relies on (token, refresh, node discovery, history reload)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str | None


@dataclass(frozen=True)
class Node:
    node: str
    ws_url: str


def http_base_from_ws(ws_url: str) -> str:
    """``ws://host:8000/ws/v1/`` -> ``http://host:8000`` (``wss`` -> ``https``)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def http_base_from_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


async def obtain_token(http: httpx.AsyncClient, base_url: str, username: str, password: str) -> TokenPair:
    """`POST /api/auth/token/` -> an access and a refresh token (SimpleJWT)."""
    response = await http.post(f"{base_url}/api/auth/token/", json={"username": username, "password": password})
    response.raise_for_status()
    body = response.json()
    return TokenPair(access=body["access"], refresh=body.get("refresh"))


async def refresh_access(http: httpx.AsyncClient, base_url: str, refresh: str) -> TokenPair:
    """`POST /api/auth/token/refresh/` -> a new access token (and the rotated refresh token)."""
    response = await http.post(f"{base_url}/api/auth/token/refresh/", json={"refresh": refresh})
    response.raise_for_status()
    body = response.json()
    return TokenPair(access=body["access"], refresh=body.get("refresh", refresh))


async def fetch_nodes(http: httpx.AsyncClient, discovery_url: str, access: str | None) -> list[Node]:
    """`GET /api/realtime/nodes/` -> ``{"nodes": [{"node", "ws_url"}, ...]}``: live, non-draining nodes."""
    response = await http.get(discovery_url, headers=_bearer(access) if access else None)
    response.raise_for_status()
    body = response.json()
    nodes = body.get("nodes", [])
    return [Node(node=str(n.get("node", "")), ws_url=str(n["ws_url"])) for n in nodes if n.get("ws_url")]


async def _paginated(http: httpx.AsyncClient, url: str, access: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    next_url: str | None = url
    query: dict[str, Any] | None = params
    while next_url:
        response = await http.get(next_url, params=query, headers=_bearer(access))
        response.raise_for_status()
        body = response.json()
        if isinstance(body, list):  # unpaginated
            return results + body
        results.extend(body.get("results", []))
        next_url, query = body.get("next"), None  # `next` carries the query
    return results


async def fetch_events(
    http: httpx.AsyncClient, base_url: str, access: str, conversation_id: str, after_seq: int = 0
) -> list[dict[str, Any]]:
    """`GET /api/conversations/<id>/events/?after_seq=N`: the kept sequenced frames after N, in order."""
    url = f"{base_url}/api/conversations/{conversation_id}/events/"
    return await _paginated(http, url, access, {"after_seq": after_seq})


async def fetch_messages(
    http: httpx.AsyncClient, base_url: str, access: str, conversation_id: str
) -> list[dict[str, Any]]:
    """`GET /api/conversations/<id>/messages/`: the conversation's messages, oldest first."""
    url = f"{base_url}/api/conversations/{conversation_id}/messages/"
    return await _paginated(http, url, access, {})
