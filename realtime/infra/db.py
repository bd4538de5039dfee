"""Runs ORM work off the event loop on a pool of threads.

`thread_sensitive=False` spreads database calls over the default executor instead of
funnelling every connection's queries through one shared thread.
"""

from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async


def db(fn: Callable[..., Any]) -> Callable[..., Any]:
    return database_sync_to_async(fn, thread_sensitive=False)
