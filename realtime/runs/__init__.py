"""Agent runs that outlive sockets: claiming with leases and fencing tokens, executing an agent,
coalescing its deltas, the node's group commit of them (`supervisor`, `delta_writer`).

May import: `realtime.agents`, `sessions_app` (services), `realtime.fanout`, `realtime.infra`,
`realtime.core`. Never the node, the connection or the server.
"""
