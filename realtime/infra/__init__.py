"""I/O plumbing with no domain knowledge: the project's Redis client and the calls made with it
(rate limits and slots, the node registry), the bridge from async code to the database (each
call within a deadline), transient failures and their throttled logging, outages of the
database or Redis (logged once each way), structured-log context, client addresses behind
proxies, the metrics exporter.

May import: `realtime.core`, Django settings, redis, Channels' database bridge. Never
`sessions_app` or the realtime packages above it.
"""
