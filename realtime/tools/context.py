"""What an external tool (`read`, `idempotent`, `once`) gets for one call: who calls, the
call's effect key and fencing token, the time it has left, and an HTTP client that sends the
key and the token with every request."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx

# The headers of a tool's HTTP requests (docs/protocol.md, "Tools and approvals"). A downstream
# service deduplicates by the key, and refuses a request whose fence is lower than one it has
# seen for the same key or run: a zombie node's late request.
IDEMPOTENCY_HEADER = "Idempotency-Key"
FENCE_HEADER = "Tether-Fence"


@cache
def tls_settings() -> ssl.SSLContext:
    """The TLS settings of every tool request (httpx's defaults), built once per process:
    building them loads the CA bundle, 5-50 ms of CPU on the event loop, which a transport
    made per call paid on every call (issue 21's benchmark, docs/benchmarks.md "Tool calls").
    An SSLContext may serve any number of connections at once."""
    return httpx.create_ssl_context()


class ToolHTTPError(Exception):
    """A tool's request answered with an HTTP error (the call's result is `error`)."""


class OutcomeUnknown(Exception):
    """Raised by a tool when its effect may or may not have happened (the request left, and no
    answer came back): for a `once` tool the result is then `unknown` (a person decides whether
    to call it again); for others an `error`."""


@dataclass(frozen=True)
class ToolContext:
    conversation_id: str
    run_id: str
    call_id: str
    # The run's fencing token when this attempt started: higher on every takeover.
    fencing_token: int
    # Seconds this call may still take (REALTIME_TOOL_TIMEOUT).
    timeout: float

    @property
    def effect_key(self) -> str:
        """Stable across takeovers: the same call, retried by another node, has the same key."""
        return self.call_id

    @property
    def headers(self) -> dict[str, str]:
        return {IDEMPOTENCY_HEADER: self.effect_key, FENCE_HEADER: str(self.fencing_token)}

    async def post(self, url: str, json: Any) -> Any:
        """POSTs JSON with the call's headers, once: no retry (a retry is the runtime's decision,
        by the tool's effect class). An HTTP error status raises ToolHTTPError; returns the
        response's JSON (None when it has none)."""
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        transport = httpx.AsyncHTTPTransport(retries=0, verify=tls_settings())
        async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:
            try:
                response = await client.post(url, json=json, headers=self.headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Never reached the service: nothing happened.
                raise ToolHTTPError(f"could not connect to {httpx.URL(url).host}: {type(exc).__name__}") from None
            except httpx.HTTPError as exc:
                # Sent, maybe received and acted on, and no answer read: it may have happened.
                raise OutcomeUnknown(f"no answer from {httpx.URL(url).host}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise ToolHTTPError(f"HTTP {response.status_code} from {response.url.host}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return {"text": response.text[:1000]}
