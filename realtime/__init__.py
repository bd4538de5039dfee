"""Tether's realtime server: the WebSocket protocol, the node, the agent runs.

The packages, from the bottom layer up; each may import only the layers below it (enforced by
import-linter, `.importlinter`; docs/architecture.md, "Layers"):

- `core`: pure, no I/O, no settings: close table, frame parsing, buckets, wire encoding,
  metric definitions.
- `infra`: I/O plumbing with no domain: the Redis client, the database bridge, rate limits in
  Redis, the node registry, logging context, transient failures, proxies, the metrics exporter.
- `fanout`: publishing committed events and control messages; a node's subscription.
- (`sessions_app`: the models, the services that own every write, tokens, REST, the admin.)
- `agents`: what produces an answer.
- `runs`: the run supervisor and the delta group commit.
- `node`: one server node's long-lived parts (runtime, resync, liveness).
- `connection`: one socket: its pure state machine and the consumer that drives it.
- `server`: daphne, the ASGI wiring, the drain; `serve` and `management` are the entry points.
"""
