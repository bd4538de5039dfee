"""One WebSocket: the pure state machine that decides (`state`), the consumer that performs its
actions (`consumer`, with the connect in `connect` and the other frames in `frames`), and the
socket's plumbing (`base`, `flow`, `origin`, `phase_timer`).

May import: `realtime.node` (the node a socket lives on), `sessions_app`, `realtime.fanout`,
`realtime.infra`, `realtime.core`. `state` is pure: it imports only `realtime.core`.
"""
