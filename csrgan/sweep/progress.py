"""Live sweep progress: what each trial is doing, ETAs from measured step times, the best result so far.

Three parts:

* :class:`SweepProgress` — the state (one :class:`TrialProgress` per trial, one :class:`StageProgress`
  per shared stage being built) and the numbers derived from it (:meth:`SweepProgress.eta`,
  :meth:`SweepProgress.best`). It is fed by the Tune callback below and by the lines trials print about
  shared stages (:func:`csrgan.sweep.logs.stage_message`, routed here by the driver), and it hands
  one-off lines (a trial started, evaluated, finished) and periodic ticks to a :class:`SweepView`.
* :class:`PlainView` — the view for logs, pipes and CI: those lines as they happen, plus a one-line
  summary every ``every_s`` seconds. The CLI has a rich, refreshed table for terminals
  (``csrgan.cli.live``); the driver never knows which one it talks to.
* :class:`ProgressCallback` — the Tune callback. Tune pickles callbacks with the experiment
  (``tuner.pkl``) and a resumed sweep gets them back from there, so the callback holds no state and
  never pickles *where* it reports: it forwards to the :class:`SweepProgress` the current process
  :meth:`ProgressCallback.attach`-ed (the driver does, for new and resumed sweeps alike).

"Best so far" is the best of each trial's *latest* evaluation (the value the final table uses), not the
best value any trial ever reported. Every report carries the last evaluation forward
(:class:`csrgan.sweep.recorder.TrialReporter`), so the step of an evaluation is the step at which the
trial's value last changed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ray.tune import Callback

from csrgan.sweep.eta import fmt_duration, remaining_s, sweep_eta
from csrgan.sweep.logs import parse_stage_line

__all__ = [
    "PlainView",
    "ProgressCallback",
    "StageProgress",
    "SweepProgress",
    "SweepView",
    "TrialProgress",
    "fmt_duration",
    "remaining_s",
    "sweep_eta",
    "trial_label",
]

Echo = Callable[[str], None]
#: Statuses of a trial that is over (counted as done/failed, no ETA).
ENDED = ("finished", "diverged", "stopped", "error")


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None


# ---------------------------------------------------------------------------------------- the state
@dataclass
class TrialProgress:
    """One trial as the terminal shows it. ``phase``/``step``/``iters``/``sps`` describe what it does
    now: building a shared stage (``pretrain``, from the stage lines), its own ``gan`` phase (from its
    reports), or ``starting`` / ``waiting for <stage>``."""

    trial_id: str
    label: str = ""
    status: str = "pending"
    phase: str = ""
    step: int = 0
    iters: int | None = None
    sps: float | None = None  # measured seconds per step of the current phase
    updated: float | None = None  # when step/sps were measured
    value: float | None = None  # the latest evaluation of the sweep's metric ...
    value_step: int | None = None  # ... and the step it was evaluated at
    started: float | None = None
    ended: float | None = None
    overhead: float | None = None  # start -> first GAN step: trial start-up, stages, first evaluation


@dataclass
class StageProgress:
    """A shared stage as its builder reports it (``stage`` is ``<stage>-<key>``, the folder name)."""

    stage: str
    state: str = ""
    trial: str | None = None
    step: int = 0
    iters: int | None = None
    sps: float | None = None
    updated: float | None = None


class SweepView(Protocol):
    """Where a sweep's progress is shown."""

    def event(self, line: str) -> None:
        """A line that stays (a trial started or ended, a stage built, a warning)."""
        ...

    def tick(self, progress: SweepProgress) -> None:
        """Called about once a second and after each change; the view decides what to redraw."""
        ...

    def close(self) -> None: ...


class SweepProgress:
    """The sweep's live state (thread-safe: Tune's loop, Ray's log thread and a view's refresh read and
    write it). ``total``: trials in the sweep (None: unknown); ``slots``: how many run at once;
    ``iters``: GAN steps of a trial not started yet."""

    def __init__(
        self,
        view: SweepView,
        metric: str,
        mode: str = "max",
        total: int | None = None,
        slots: int = 1,
        iters: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.view, self.metric, self.mode = view, metric, mode
        self.total, self.slots, self.iters, self.clock = total, max(1, slots), iters, clock
        self.trials: dict[str, TrialProgress] = {}
        self.stages: dict[str, StageProgress] = {}
        self.t0 = clock()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------------- helpers
    def say(self, line: str) -> None:
        """An event line, stamped with the time since the sweep started."""
        self.view.event(f"[{fmt_duration(self.clock() - self.t0):>6}] {line}")

    def _trial(self, trial_id: str, label: str = "") -> TrialProgress:
        t = self.trials.get(trial_id)
        if t is None:
            t = self.trials[trial_id] = TrialProgress(trial_id, label)
        if label and not t.label:
            t.label = label
        return t

    def name(self, t: TrialProgress) -> str:
        return f"{t.trial_id} ({t.label})" if t.label else t.trial_id

    def tick(self) -> None:
        self.view.tick(self)

    # ----------------------------------------------------------------------- events from the callback
    def sync(self, trials: Iterable[tuple[str, str, str]]) -> None:
        """Tune's trial list as ``(id, label, Tune status)``: adds trials it has created but not started
        (``PENDING``) and those a resumed sweep finished before (``TERMINATED``/``ERROR``)."""
        with self._lock:
            for tid, label, status in trials:
                if tid in self.trials:
                    continue
                t = self._trial(tid, label)
                if status == "TERMINATED":
                    t.status = "finished"
                elif status == "ERROR":
                    t.status = "error"

    def trial_started(self, trial_id: str, label: str) -> None:
        with self._lock:
            t = self._trial(trial_id, label)
            t.status, t.phase, t.started = "running", "starting", self.clock()
            t.step, t.iters, t.sps, t.updated = 0, None, None, None
        self.say(f"start    {self.name(t)}")

    def trial_result(self, trial_id: str, label: str, result: Mapping[str, Any]) -> None:
        """A report of the trial's own (GAN) phase: step, s/step, and maybe a new evaluation."""
        now = self.clock()
        with self._lock:
            t = self._trial(trial_id, label)
            if t.status == "pending":
                t.status, t.started = "running", now
            step = _int(result.get("step"))
            if step is None:
                return
            first_gan = t.phase != "gan"
            sps = _num(result.get("time/step_s"))
            if sps is None and t.phase == "gan" and t.updated is not None and step > t.step:
                sps = (now - t.updated) / (step - t.step)
            t.phase, t.step, t.updated = str(result.get("phase", "gan")), step, now
            t.iters = _int(result.get("iters")) or t.iters or self.iters
            t.sps = sps if sps is not None else t.sps
            if first_gan and t.started is not None:
                t.overhead = max(0.0, now - t.started - step * (t.sps or 0.0))
            value = _num(result.get(self.metric))
            new_eval = value is not None and value != t.value
            if new_eval:
                t.value, t.value_step = value, step
        if new_eval and (t.iters is None or step < t.iters):  # the last one is in the "done" line
            self.say(f"eval     {self.name(t)} step {step}/{t.iters or '?'}: {self.metric} {value:.4f}")
        self.tick()

    def trial_ended(
        self, trial_id: str, label: str, last: Mapping[str, Any], error_at: str | None = None
    ) -> None:
        """The trial completed (finished, diverged, or stopped by the scheduler), or failed
        (``error_at``: where its error is)."""
        with self._lock:
            t = self._trial(trial_id, label)
            t.ended = self.clock()
            step, iters = _int(last.get("step")), _int(last.get("iters")) or t.iters
            value = _num(last.get(self.metric))
            if value is not None and value != t.value:
                t.value, t.value_step = value, step
            if error_at is not None:
                t.status = "error"
            elif last.get("diverged"):
                t.status = "diverged"
            elif step is not None and iters is not None and step < iters:
                t.status = "stopped"
            else:
                t.status = "finished"
            took = f" in {fmt_duration(t.ended - t.started)}" if t.started is not None else ""
        if error_at is not None:
            self.say(f"FAILED   {self.name(t)}: see {error_at}")
        else:
            shown = f"{self.metric} {t.value:.4f}" if t.value is not None else "no metric"
            tag = {"finished": "done", "stopped": "stopped", "diverged": "DIVERGED"}[t.status]
            self.say(f"{tag:<8} {self.name(t)} step {step if step is not None else '?'}/{iters or '?'}"
                      f": {shown}{took}")  # fmt: skip
        self.tick()

    # ---------------------------------------------------------------------- lines from trial processes
    def mark_line(self, line: str) -> None:
        """A ``[csrgan] ...`` line from a trial or stage task: stage events are shown, progress is kept."""
        parsed = parse_stage_line(line)
        if parsed is None:
            self.say(line.strip())
            return
        now = self.clock()
        with self._lock:
            s = self.stages.setdefault(parsed.stage, StageProgress(parsed.stage))
            s.trial = parsed.trial or s.trial
            t = self.trials.get(parsed.trial) if parsed.trial else None
            if parsed.step is not None:
                s.step, s.iters, s.sps, s.updated = parsed.step, parsed.iters, parsed.sps or s.sps, now
                s.state = "building"
            else:
                s.state = parsed.text.split(" ", 1)[0].rstrip(",:;")  # queued, building, built, reused, ...
            if t is not None and t.phase != "gan":
                waiting = s.state == "waiting"
                t.phase = f"waiting for {parsed.stage}" if waiting else parsed.stage.split("-", 1)[0]
                if parsed.step is not None:
                    t.step, t.iters, t.sps, t.updated = s.step, s.iters, s.sps, now
        if parsed.step is None:
            by = f" [trial {parsed.trial}]" if parsed.trial else ""
            self.say(f"stage {parsed.stage}: {parsed.text}{by}")
        self.tick()

    # ------------------------------------------------------------------------------------- derived
    def snapshot(self) -> tuple[list[TrialProgress], list[StageProgress]]:
        """Copies of the trials and of the stages queued or being built, for rendering."""
        with self._lock:
            building = [
                replace(s) for s in self.stages.values() if s.state in ("queued", "building", "waiting")
            ]
            return [replace(t) for t in self.trials.values()], building

    def best(self) -> TrialProgress | None:
        """The trial whose latest evaluation is best (the value the final table will use)."""
        with self._lock:
            scored = [t for t in self.trials.values() if t.value is not None and t.status != "error"]
            if not scored:
                return None
            pick = max if self.mode == "max" else min
            return replace(pick(scored, key=lambda t: t.value))

    def gan_sps(self) -> float | None:
        with self._lock:
            return _mean(t.sps for t in self.trials.values() if t.phase == "gan")

    def per_trial_s(self) -> float | None:
        """What a trial not started yet should take: the mean measured start-up overhead (trial start,
        shared stages, first evaluation) plus its GAN steps at the mean measured seconds per step; before
        any GAN step time is measured, the mean wall time of the trials that finished in this run."""
        with self._lock:
            trials = list(self.trials.values())
        overhead = _mean(t.overhead for t in trials)
        iters = _mean(float(t.iters) for t in trials if t.iters and t.phase == "gan")
        sps, iters = self.gan_sps(), iters or (float(self.iters) if self.iters else None)
        if overhead is not None and sps is not None and iters is not None:
            return overhead + iters * sps
        took = [
            t.ended - t.started
            for t in trials
            if t.status == "finished" and t.started is not None and t.ended is not None
        ]
        return _mean(took)

    def trial_eta(self, t: TrialProgress, now: float | None = None) -> float | None:
        """Seconds until ``t`` ends (0 when it has; None when not yet measurable)."""
        now = self.clock() if now is None else now
        if t.status in ENDED:
            return 0.0
        since = now - t.updated if t.updated is not None else 0.0
        if t.phase == "gan":
            return remaining_s(t.step, t.iters, t.sps, since)
        gan = self.gan_sps()
        later = None if gan is None or not self.iters else self.iters * gan  # the GAN phase to come
        if t.sps is not None and t.iters is not None and later is not None:  # building a stage now
            return (remaining_s(t.step, t.iters, t.sps, since) or 0.0) + later
        per = self.per_trial_s()
        if per is None or t.started is None:
            return None
        return max(0.0, per - (now - t.started))

    def counts(self) -> dict[str, int]:
        with self._lock:
            c = {s: 0 for s in ("pending", "running", *ENDED)}
            for t in self.trials.values():
                c[t.status] = c.get(t.status, 0) + 1
        if self.total is not None:
            c["pending"] = max(0, self.total - sum(v for k, v in c.items() if k != "pending"))
        return c

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until the sweep ends (:func:`sweep_eta` over the running and not-started trials)."""
        now = self.clock() if now is None else now
        trials, _ = self.snapshot()
        running = [self.trial_eta(t, now) for t in trials if t.status == "running"]
        pending = self.counts()["pending"]
        if self.total is None and pending == 0 and not running:
            return None
        return sweep_eta(running, pending, self.per_trial_s(), self.slots)

    def best_text(self) -> str:
        b = self.best()
        if b is None:
            return f"best {self.metric}: none yet"
        return f"best {self.metric} {b.value:.4f} ({self.name(b)}, step {b.value_step}/{b.iters or '?'})"

    def summary(self, now: float | None = None) -> str:
        """One line for logs: counts, the running trials' steps, the sweep's ETA, the best so far."""
        now = self.clock() if now is None else now
        c = self.counts()
        failed = c["error"] + c["diverged"]
        total = f"/{self.total}" if self.total is not None else ""
        trials, stages = self.snapshot()
        doing = [
            f"{t.trial_id} {t.phase}" + (f" {t.step}/{t.iters}" if t.iters else "")
            for t in trials
            if t.status == "running"
        ]
        doing += [f"{s.stage} {s.step}/{s.iters or '?'}" for s in stages if not s.trial and s.iters]
        shown = "; ".join(doing[:4]) + ("; ..." if len(doing) > 4 else "")
        done = c["finished"] + c["stopped"]
        head = (
            f"[{fmt_duration(now - self.t0):>6}] {c['running']} running, {done}{total} done, {failed} failed"
        )
        doing_text = f" ({shown})" if shown else ""
        return f"{head}{doing_text}; ETA {fmt_duration(self.eta(now))}; {self.best_text()}"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _int(v: Any) -> int | None:
    n = _num(v)
    return int(n) if n is not None else None


# ----------------------------------------------------------------------------------------- the view
class PlainView:
    """Lines for logs and pipes: every event as it happens, and :meth:`SweepProgress.summary` every
    ``every_s`` seconds while trials run."""

    def __init__(self, echo: Echo = print, every_s: float = 30.0, clock: Callable[[], float] = time.time):
        self.echo, self.every_s, self.clock = echo, every_s, clock
        self._last = clock()

    def event(self, line: str) -> None:
        self.echo(line)

    def tick(self, progress: SweepProgress) -> None:
        now = self.clock()
        if now - self._last >= self.every_s and progress.counts()["running"]:
            self._last = now
            self.echo(progress.summary(now))

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------- Tune callback
def trial_label(config: Mapping[str, Any] | None) -> str:
    """``mix_prob=0.5, seed=0`` from a trial's Tune config (grid/arms: ``{"trial": ...}``; Optuna: flat)."""
    cfg = config or {}
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
    return ", ".join(parts)


class ProgressCallback(Callback):
    """Forwards Tune's trial events to the attached :class:`SweepProgress` (none attached: no-op).

    The constructor's arguments are kept for the pickles of sweeps started by earlier versions."""

    _progress: SweepProgress | None = None

    def __init__(self, metric: str, mode: str, total: int | None = None, every_s: float = 30.0) -> None:
        self.metric, self.mode, self.total, self.every_s = metric, mode, total, every_s

    @classmethod
    def attach(cls, progress: SweepProgress | None) -> None:
        """Where every ProgressCallback of this process reports (also one restored by ``Tuner.restore``)."""
        cls._progress = progress

    def setup(self, **info: Any) -> None:
        """Tune calls this when the experiment (re)starts."""
        self._synced = 0.0

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        p = type(self)._progress
        if p is None or p.clock() - getattr(self, "_synced", 0.0) < 1.0:  # Tune calls this every ~0.1 s
            return
        self._synced = p.clock()
        p.sync((t.trial_id, trial_label(t.config), str(t.status)) for t in trials)
        p.tick()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (p := type(self)._progress) is not None:
            p.trial_started(trial.trial_id, trial_label(trial.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if (p := type(self)._progress) is not None:
            p.trial_result(trial.trial_id, trial_label(trial.config), result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (p := type(self)._progress) is not None:
            p.trial_ended(trial.trial_id, trial_label(trial.config), trial.last_result or {})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (p := type(self)._progress) is not None:
            where = f"{trial.local_path or trial.path}/error.txt"
            p.trial_ended(trial.trial_id, trial_label(trial.config), trial.last_result or {}, error_at=where)
