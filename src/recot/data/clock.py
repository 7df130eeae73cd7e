"""The clock a time is written as, in prompts, group timestamps and the synthetic QA answers alike."""

from __future__ import annotations


def clock_time(seconds: float) -> str:
    """``"mm:ss"`` below an hour, ``"h:mm:ss"`` from an hour on (whole seconds, rounded down): the
    ``time_format = "clock"`` group text, written as the synthetic QA answers are."""
    s = int(seconds)
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"
