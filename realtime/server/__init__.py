"""The process around the nodes: daphne as Tether runs it (`daphne_server`), the ASGI wiring of
a node (`routing`), the drain on SIGTERM (`drain`). The entry point is `python -m realtime.serve`.

May import: every realtime package below it.
"""
