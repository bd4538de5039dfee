"""Where a continued run is in its committed text, without I/O.

An acting agent is run again from the start when its run is continued (realtime/agents/base.py):
the text it yields again must be the text the run committed before, piece by piece, and only
what goes beyond it is new. A piece that ends past the committed text is split: its committed
head is dropped and its tail goes out. A piece that differs from the committed text means the
agent did not do what it did before (a deploy changed it, or it is not deterministic): the run
fails rather than say or do something else under the same run.
"""

from __future__ import annotations


class Divergence(Exception):
    """The agent did not repeat what its journal recorded."""


class TextCursor:
    def __init__(self, committed: str) -> None:
        self.committed = committed
        # Characters of the run's text the agent has produced so far (committed or new).
        self.position = 0

    @property
    def behind(self) -> bool:
        return self.position < len(self.committed)

    def text(self, piece: str) -> str:
        """The part of `piece` that is new (to be committed); raises Divergence if the rest
        is not the committed text at this point."""
        known = min(len(piece), max(0, len(self.committed) - self.position))
        if known and piece[:known] != self.committed[self.position:self.position + known]:
            raise Divergence(f"text at offset {self.position} differs from the committed text: "
                             f"{piece[:known][:40]!r} vs {self.committed[self.position:self.position + known][:40]!r}")
        self.position += len(piece)
        return piece[known:]

    def expect(self, offset: int, what: str) -> None:
        """A recorded step happened at `offset` of the text: the agent must be there now."""
        if self.position != offset:
            raise Divergence(f"{what} was recorded at text offset {offset}, the agent is at {self.position}")

    def replay(self, recorded: str, what: str) -> None:
        """Text a recorded step produced (a model response's content): it must be committed."""
        if self.committed[self.position:self.position + len(recorded)] != recorded:
            raise Divergence(f"{what}'s recorded text is not the committed text at offset {self.position}")
        self.position += len(recorded)

    def take_tail(self) -> str:
        """The committed text beyond the agent's position, which it did not produce itself this
        time (an interrupted model response streamed it): the agent is past it from now on."""
        tail = self.committed[self.position:]
        self.position = max(self.position, len(self.committed))
        return tail

    def finished(self) -> None:
        """The agent ended: it must have produced all the committed text."""
        if self.behind:
            raise Divergence(f"the agent ended at text offset {self.position} of {len(self.committed)} committed")
