"""Per-phase timing of one connect, from the `connect` frame to the last replayed event
(issue 12: where a resume spends its time). Cheap enough to leave on: a few clock reads per
connect, one DEBUG line (logger `realtime.phases`) when the replay is done:

    connect phases (ms): token 0.1, limits 0.6, join 0.1, open_session 3.1, ready 0.2,
    replay 4.0; total 8.1; 12 events

`limits` is the per-user rate and slot (one round trip); `join` is what the live-feed join
still took after them (a resume starts it beside the limits).
"""

from __future__ import annotations

import logging

log = logging.getLogger("realtime.phases")


class PhaseTimer:
    __slots__ = ("marks", "conversation_id")

    def __init__(self, now: float):
        # (phase that just ended, loop time it ended); the first is the connect frame's arrival.
        self.marks: list[tuple[str, float]] = [("", now)]
        self.conversation_id = ""

    def mark(self, phase: str, now: float) -> None:
        self.marks.append((phase, now))

    def durations_ms(self) -> dict[str, float]:
        return {
            phase: round((at - self.marks[i - 1][1]) * 1000, 2)
            for i, (phase, at) in enumerate(self.marks)
            if i
        }

    def report(self, events: int) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        phases = self.durations_ms()
        total = (self.marks[-1][1] - self.marks[0][1]) * 1000
        log.debug(
            "connect phases (ms): %s; total %.1f; %d events; conversation %s",
            ", ".join(f"{k} {v:g}" for k, v in phases.items()), total, events, self.conversation_id,
        )
