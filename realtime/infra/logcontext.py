"""Structured-log context (LOG_FORMAT=json, see docs/operations.md "Logs").

Records carry `node` always, and `conversation_id`, `connection_id`, `run_id` wherever the code
that logs runs on behalf of one: a socket binds its conversation and connection once `ready`
is near, a run driver binds its run. The binding lives in a context variable, so it follows
the task (and the tasks it starts) without being passed down, and log calls deep in shared
code (services, fan-out) carry it too. Per-event fields (`seq`, `close_code`) are passed with
`extra=` by the call that knows them.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from typing import Any

FIELDS = ("node", "conversation_id", "connection_id", "client_id", "run_id")

# The plain format's suffix: record attribute -> its short name, in the order shown.
PLAIN_FIELDS = (
    ("node", "node"),
    ("conversation_id", "conv"),
    ("client_id", "client"),
    ("connection_id", "conn"),
    ("run_id", "run"),
    ("seq", "seq"),
    ("close_code", "code"),
)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Why a WebSocket ended, for the close codes that are not the application's own (those are
# the close table, realtime/core/closes.py): what daphne or the peer's stack sent (RFC 6455).
PROTOCOL_CLOSE_CAUSES = {
    1001: "the client went away (tab closed, page left)",
    1002: "protocol error: the client broke the WebSocket framing",
    1003: "unsupported data: the client sent a binary frame",
    1005: "closed without a status code",
    1006: "abnormal closure: no close frame (network cut, reset or a killed process)",
    1007: "invalid payload: the client sent a text frame that is not UTF-8",
    1009: "message too big: daphne refused a frame over --websocket-max-message-size"
          " (2 x REALTIME_MAX_FRAME_BYTES) while it arrived",
    1011: "internal error in the client's or the server's WebSocket stack",
}


def close_cause(code: int | None) -> str | None:
    """What a protocol-level close code means, for the log line of a socket's end."""
    return PROTOCOL_CLOSE_CAUSES.get(code) if code is not None else None

# Never mutated: bind() sets a new dict, so the shared empty default is safe.
_bound: ContextVar[dict[str, str]] = ContextVar("tether_log_fields", default={})  # noqa: B039


def bind(**fields: Any) -> None:
    """Adds fields to every record logged from this task (and tasks it starts) from now on."""
    _bound.set({**_bound.get(), **{k: str(v) for k, v in fields.items() if v is not None}})


def bind_only(**fields: Any) -> None:
    """Like bind, but drops what was bound before: a task started on behalf of a socket
    (a run driver kicked by a message) must not carry that socket's ids."""
    _bound.set({})
    bind(**fields)


class ContextFilter(logging.Filter):
    """Puts the bound fields on each record; `extra=` given at the call wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "node"):
            record.node = _default_node()
        for name, value in _bound.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _default_node() -> str:
    from django.conf import settings

    return getattr(settings, "REALTIME_NODE_ID", "")


def _compact(value: object) -> str:
    text = str(value)
    return text[:8] if _UUID.match(text) else text


class PlainFormatter(logging.Formatter):
    """One human-readable line, ending with the record's context in brackets: what a JSON line
    carries (PLAIN_FIELDS), in a few dozen characters."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        facts = [f"{short}={_compact(getattr(record, name))}" for name, short in PLAIN_FIELDS
                 if getattr(record, name, None) not in (None, "")]
        if not facts:
            return line
        # After the message's first line, before a traceback.
        first, sep, rest = line.partition("\n")
        return f"{first} [{' '.join(facts)}]{sep}{rest}"


def logging_config(log_format: str, level: str, logger_levels: dict[str, str] | None = None) -> dict:
    """Django's LOGGING for `plain` (the default: one human-readable line) or `json` (one JSON
    object per line, through python-json-logger); `logger_levels` sets single loggers' levels."""
    if log_format not in ("plain", "json"):
        raise ValueError(f"LOG_FORMAT must be 'plain' or 'json', not {log_format!r}")
    formatters = {
        "plain": {"()": "realtime.infra.logcontext.PlainFormatter",
                  "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "realtime.infra.logcontext.ContextFilter"}},
        "formatters": {log_format: formatters[log_format]},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["context"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.channels.server": {"level": "WARNING"},
            **{name: {"level": lvl} for name, lvl in (logger_levels or {}).items()},
        },
    }
