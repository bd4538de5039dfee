"""I/O plumbing with no domain knowledge: the project's Redis clients (a pipelined connection
of our own in RESP, redis-py's pool) and the calls made with them (rate limits and slots, the
node registry), the bridge from async code to the database (each
call within a deadline), transient failures and their throttled logging, outages of the
database or Redis (logged once each way), structured-log context, client addresses behind
proxies, the metrics exporter.

May import: `realtime.core`, Django settings and database connections, redis and hiredis. Never
`sessions_app` or the realtime packages above it.
"""
