"""The bottom layer: pure modules every other package may import (sessions_app included).

Owns: the close table (`closes`), frame parsing and the resume plan (`protocol`), token-bucket
arithmetic (`buckets`), wire encoding (`wire`), metric definitions (`metrics`), the one-waiter
wake-up (`wake`).
May import: the standard library, and `prometheus_client` for the metric definitions. No
Django, Redis, database, Channels or daphne, no settings, no other Tether package: everything
here is tested without a server (`pytest -m pure`).
"""
