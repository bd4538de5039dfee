"""One server node's long-lived parts: its runtime (identity, run supervisor, fan-out hub, open
sockets), the periodic resync of its sockets, its liveness and the reaping of dead nodes.

May import: `realtime.runs` and below. Reaches a socket only through `runtime.NodeConnection`,
never by importing `realtime.connection`.
"""
