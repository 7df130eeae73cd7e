"""The decode-time budget shared by every decoding backend."""

from __future__ import annotations

import time

from recot.video.errors import DecodeTimeoutError


class DecodeBudget:
    """Decoding time spent so far, excluding the time the caller holds a yielded batch.

    A backend calls ``check(position)`` while it decodes and ``pause()`` /
    ``resume()`` around each ``yield``, so a slow consumer never uses up the
    decoder's ``seconds``.
    """

    def __init__(self, path: str, seconds: float) -> None:
        self.path, self.seconds, self.spent = path, seconds, 0.0
        self.mark = time.monotonic()

    def pause(self) -> None:
        """Stop counting (a frame or batch is handed to the caller)."""
        self.spent += time.monotonic() - self.mark

    def resume(self) -> None:
        """Count again (the caller asked for the next frame)."""
        self.mark = time.monotonic()

    def check(self, position: float) -> None:
        """Raise ``DecodeTimeoutError`` once the budget is spent; ``position`` (seconds of video) goes in the message."""
        if self.spent + time.monotonic() - self.mark > self.seconds:
            raise DecodeTimeoutError(
                self.path, f"decoding exceeded its {self.seconds:.0f} s budget near {position:.2f} s of video"
            )
