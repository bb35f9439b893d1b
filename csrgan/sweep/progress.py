"""Live sweep progress in the terminal: one line per trial event, plus running/done/failed and best so far.

Tune pickles its callbacks with the experiment (``tuner.pkl``) and a resumed sweep gets them back from
there, so the callback never pickles *where* it prints: it prints through the function the current
process :meth:`ProgressCallback.attach`-ed (the driver does, for new and resumed sweeps alike), and
its counters start afresh in :meth:`ProgressCallback.setup`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback


class ProgressCallback(Callback):
    _echo: Callable[[str], None] = print

    def __init__(self, metric: str, mode: str, total: int | None = None, every_s: float = 30.0) -> None:
        self.metric, self.mode, self.total, self.every_s = metric, mode, total, every_s
        self.setup()

    @classmethod
    def attach(cls, echo: Callable[[str], None]) -> None:
        """Where every ProgressCallback of this process prints (also one restored by ``Tuner.restore``)."""
        cls._echo = staticmethod(echo)  # type: ignore[assignment]

    def echo(self, line: str) -> None:
        type(self)._echo(line)

    def setup(self, **info: Any) -> None:
        """Tune calls this when the experiment (re)starts: count this run's trials from zero."""
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.best: tuple[float, str] | None = None
        self._last_line = 0.0
        self._t0 = time.time()

    # ---- helpers
    def _label(self, trial: Any) -> str:
        cfg = trial.config or {}
        t = cfg.get("trial")
        if isinstance(t, dict):
            parts = [f"{k.split('.')[-1]}={v}" for k, v in t.get("params", {}).items()] + [
                f"seed={t.get('seed')}"
            ]
        else:
            parts = [
                f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                for k, v in cfg.items()
            ]
        return f"{trial.trial_id} ({', '.join(parts)})"

    def _status(self) -> str:
        total = f"/{self.total}" if self.total else ""
        best = f"; best {self.metric} = {self.best[0]:.4f} [{self.best[1]}]" if self.best else ""
        return (
            f"[{time.time() - self._t0:6.0f}s] running {len(self.running)}, done {len(self.done)}{total}, "
            f"failed {len(self.failed)}{best}"
        )

    # ---- Tune hooks
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self.echo(f"  start  {self._label(trial)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            better = self.best is None or (
                value > self.best[0] if self.mode == "max" else value < self.best[0]
            )
            if better:
                self.best = (float(value), trial.trial_id)
        if time.time() - self._last_line > self.every_s:
            self._last_line = time.time()
            self.echo(self._status())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        last = trial.last_result or {}
        value = last.get(self.metric)
        shown = f"{self.metric}={value:.4f}" if isinstance(value, int | float) else "no metric"
        tag = "DIVERGED" if last.get("diverged") else "done"
        self.echo(f"  {tag:<6} {self._label(trial)} step {last.get('step', '?')}: {shown}")
        self.echo(self._status())

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.failed.add(trial.trial_id)
        self.echo(f"  FAILED {self._label(trial)}: see {trial.local_path or trial.path}/error.txt")
        self.echo(self._status())
