"""Tools agents call: their registry (`REALTIME_TOOLS`, each with its effect class and whether
it needs a person's approval), the HTTP helper that carries a call's idempotency key and
fencing token, and the demo tools. How a call is journaled and made is the runs' business
(realtime/runs/acting.py).

May import: `realtime.agents` (the step types), `sessions_app` (services), `realtime.infra`,
`realtime.core`. Never the runs, the node, the connection or the server.
"""
