"""ETA math for progress displays: time left in a phase, in a sweep of parallel trials; durations as text.

Pure functions (no Ray, no rich), shared by the sweep's live view (:mod:`csrgan.sweep.progress`) and
``csrgan train``'s progress bar (:mod:`csrgan.cli.live`).
"""

from __future__ import annotations

import heapq
import math

__all__ = ["fmt_duration", "remaining_s", "sweep_eta"]


def remaining_s(step: int, iters: int | None, sps: float | None, since_s: float = 0.0) -> float | None:
    """Seconds left in a phase at ``step`` of ``iters``, ``sps`` seconds per step measured ``since_s``
    seconds ago (the time since that measurement counts as spent); None when either is unknown."""
    if iters is None or sps is None:
        return None
    return max(0.0, (iters - step) * sps - since_s)


def sweep_eta(
    running: list[float | None], pending: int, per_trial_s: float | None, slots: int
) -> float | None:
    """Seconds until the last trial ends: the running trials' remaining seconds fill ``slots`` parallel
    slots, and each of ``pending`` trials not started yet takes the next free slot for ``per_trial_s``.
    None when a needed number is unknown (a running trial's remaining time, or the cost of a new trial
    while some are still to start)."""
    if any(r is None for r in running) or (pending > 0 and per_trial_s is None):
        return None
    free = [float(r) for r in running if r is not None]
    free += [0.0] * max(0, slots - len(free))
    heapq.heapify(free)
    end = max(free, default=0.0)
    for _ in range(pending):
        t = heapq.heappop(free) + float(per_trial_s or 0.0)
        heapq.heappush(free, t)
        end = max(end, t)
    return end


def fmt_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
