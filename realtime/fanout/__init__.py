"""Live delivery between nodes through Redis pub/sub: publishing committed events and control
messages (`publish`), and a node's one subscription (`subscription`, its connection) that hands them
to its sockets (`hub`).

May import: `realtime.core`, `realtime.infra`. Below `sessions_app`, whose operator actions
publish through it.
"""
