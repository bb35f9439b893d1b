"""What the terminal shows while a sweep or a training runs: rich when stdout is a terminal, lines when not.

* :class:`LiveSweepView` — a :class:`csrgan.sweep.progress.SweepView`: one table row per trial (params,
  phase, step/iters, latest metric and its step, s/step, status, ETA), a footer with the counts, the
  sweep's ETA and the best so far, redrawn every second; events are printed above it. Without a
  terminal the driver's default :class:`csrgan.sweep.progress.PlainView` prints lines instead.
* :func:`train_reporter` — the :class:`csrgan.train.context.Reporter` ``csrgan train`` hands to the
  launcher: a rich progress bar (step/iters, losses, s/step, ETA) in this process on a terminal, else
  one plain line per report (:class:`TrainLines`, which also works inside Ray Train workers: Ray
  forwards their output).

The trainer never knows who watches; only the CLI imports rich.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from csrgan.metrics import METRIC_NAMES
from csrgan.sweep.eta import fmt_duration, remaining_s
from csrgan.sweep.logs import MARK

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from csrgan.sweep.progress import SweepProgress, TrialProgress

__all__ = ["LiveSweepView", "TrainLines", "is_terminal", "stage_iters", "sweep_view", "train_reporter"]

#: Rows of finished trials kept in the live table (the newest; older ones are summed up in one row).
MAX_ENDED_ROWS = 12
_STYLE = {"running": "cyan", "finished": "green", "stopped": "yellow", "diverged": "red", "error": "bold red"}


def is_terminal(stream: Any = None) -> bool:
    stream = stream if stream is not None else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


# ---------------------------------------------------------------------------------------------- sweep
class LiveSweepView:
    """The sweep on a terminal (see the module docstring). The table appears with the first tick."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 1.0) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console()
        self.refresh_per_second = refresh_per_second
        self._progress: SweepProgress | None = None
        self._live: Any = None

    def event(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def tick(self, progress: SweepProgress) -> None:
        if self._live is not None:
            return
        from rich.live import Live

        self._progress = progress
        self._live = Live(
            get_renderable=self.render,
            console=self.console,
            refresh_per_second=self.refresh_per_second,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start()

    def render(self) -> RenderableType:
        from rich.text import Text

        return sweep_table(self._progress) if self._progress is not None else Text("")

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()  # the last table stays on screen
            self._live = None


def sweep_view() -> LiveSweepView | None:
    """The live view when stdout is a terminal; None (the driver's plain lines) otherwise."""
    return LiveSweepView() if is_terminal() else None


def _trial_row(p: SweepProgress, t: TrialProgress, now: float) -> list[Any]:
    from rich.text import Text

    step = f"{t.step}/{t.iters}" if t.iters else ("–" if t.status == "pending" else str(t.step))
    value = f"{t.value:.4f} @{t.value_step}" if t.value is not None else "–"
    sps = f"{t.sps:.3f}" if t.sps is not None else "–"
    eta = "" if t.status != "running" else fmt_duration(p.trial_eta(t, now))
    status = Text(t.status, style=_STYLE.get(t.status, "dim"))
    return [Text(x) for x in (t.trial_id, t.label, t.phase or "–", step, value, sps)] + [status, Text(eta)]


def sweep_table(p: SweepProgress, now: float | None = None) -> RenderableType:
    """The live table of ``p`` (rows: running trials, stages built outside trials, pending, ended)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = p.clock() if now is None else now
    trials, stages = p.snapshot()
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("trial", "params", "phase", "step", p.metric, "s/step", "status", "ETA"):
        table.add_column(name, justify="right" if name in ("step", "s/step", "ETA") else "left")
    running = [t for t in trials if t.status == "running"]
    ended = sorted(
        (t for t in trials if t.status not in ("running", "pending")), key=lambda t: -(t.ended or 0)
    )
    for t in running:
        table.add_row(*_trial_row(p, t, now))
    for s in stages:
        if s.trial is None:  # built by the driver's Ray task, not inside a trial
            eta = remaining_s(s.step, s.iters, s.sps, now - (s.updated or now))
            sps = f"{s.sps:.3f}" if s.sps else "–"
            cells = (
                s.stage,
                "(shared stage)",
                s.stage.split("-")[0],
                f"{s.step}/{s.iters}" if s.iters else "–",
                "–",
                sps,
                s.state,
            )
            table.add_row(*(Text(c) for c in cells), Text(fmt_duration(eta)))
    pending = p.counts()["pending"]
    if pending:
        table.add_row("…", f"{pending} trial(s) not started", "", "", "", "", "pending", "")
    for t in ended[:MAX_ENDED_ROWS]:
        table.add_row(*_trial_row(p, t, now))
    if len(ended) > MAX_ENDED_ROWS:
        table.add_row("…", f"{len(ended) - MAX_ENDED_ROWS} more ended", "", "", "", "", "", "")
    return Group(table, Text(_footer(p, now), style="bold"))


def _footer(p: SweepProgress, now: float) -> str:
    c = p.counts()
    total = f"/{p.total}" if p.total is not None else ""
    return (
        f"{c['running']} running · {c['finished'] + c['stopped']}{total} done · "
        f"{c['error'] + c['diverged']} failed · elapsed {fmt_duration(now - p.t0)} · "
        f"ETA {fmt_duration(p.eta(now))} ({p.slots} at once) · {p.best_text()}"
    )


# ---------------------------------------------------------------------------------------------- train
def stage_iters(cfg: Any, stage: str) -> int:
    """The steps ``stage`` trains with ``cfg`` (the bar's total before the first report)."""
    return int(
        {"cyclegan": cfg.cyclegan.iters, "pretrain": cfg.sr.pretrain.iters}.get(stage, cfg.sr.gan.iters)
    )


def _losses(metrics: Mapping[str, Any]) -> str:
    vals = [(k.removeprefix("loss/"), v) for k, v in metrics.items() if k.startswith("loss/")]
    return " ".join(f"{k} {v:.4g}" for k, v in vals if isinstance(v, int | float))


def _evals(metrics: Mapping[str, Any]) -> str:
    vals = [
        (k, v)
        for k, v in metrics.items()
        if "/" in k and not k.startswith(("loss/", "time/")) and k.rsplit("/", 1)[1] in METRIC_NAMES
    ]
    return ", ".join(f"{k} {v:.4f}" for k, v in vals if isinstance(v, int | float) and math.isfinite(v))


@dataclass(frozen=True)
class TrainLines:
    """Reporter factory: one plain line per report, ``[pretrain] step 200/400 · losses · s/step · ETA``.

    Picklable: Ray ships it to the rank-0 Train worker, whose output Ray forwards to the driver; there
    ``marked`` lines (:data:`csrgan.sweep.logs.MARK`) are the ones the CLI shows, the rest is logged."""

    stage: str
    iters: int
    marked: bool = False

    def __call__(self) -> _LineReporter:
        prefix = MARK if self.marked else ""
        return _LineReporter(self.stage, self.iters, lambda text, **kw: print(prefix + text, **kw))


class _LineReporter:
    def __init__(self, stage: str, iters: int, echo: Callable[..., None]) -> None:
        self.stage, self.iters, self.echo = stage, iters, echo
        self.say(f"{iters} steps; a line at each evaluation or checkpoint")

    def say(self, text: str) -> None:
        self.echo(f"[{self.stage}] {text}", flush=True)

    def resumed(self, step: int) -> None:
        self.say(f"resumed from the checkpoint at step {step}")

    def report(self, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        step, iters, sps = metrics.get("step"), metrics.get("iters") or self.iters, metrics.get("time/step_s")
        if metrics.get("diverged"):
            self.say(f"DIVERGED at step {step} (non-finite loss)")
            return metrics
        parts = [f"step {step}/{iters}", _losses(metrics)]
        if isinstance(sps, float) and isinstance(step, int):
            parts += [f"{sps:.3f} s/step", f"ETA {fmt_duration(remaining_s(step, iters, sps))}"]
        parts.append(_evals(metrics))
        self.say(" · ".join(p for p in parts if p))
        return metrics


class TrainBar:
    """A rich progress bar for one stage in this process; evaluations are printed above it."""

    def __init__(self, stage: str, iters: int, console: Console | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.stage, self.iters = stage, iters
        self.bar = Progress(
            TextColumn(f"[bold]{stage}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[losses]}"),
            console=console,
            refresh_per_second=1,
        )
        self.task = self.bar.add_task(stage, total=iters, rate="– s/step", eta="?", losses="")
        self._sps: float | None = None
        self._at = time.time()
        self.bar.start()

    def resumed(self, step: int) -> None:
        self.bar.update(self.task, completed=step)
        self.bar.console.print(f"[{self.stage}] resumed from the checkpoint at step {step}", markup=False)

    def report(self, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        step, sps = metrics.get("step"), metrics.get("time/step_s")
        iters = int(metrics.get("iters") or self.iters)
        if isinstance(sps, float):
            self._sps, self._at = sps, time.time()
        eta = remaining_s(step, iters, self._sps) if isinstance(step, int) else None
        self.bar.update(
            self.task,
            completed=step if isinstance(step, int) else None,
            total=iters,
            rate=f"{self._sps:.3f} s/step" if self._sps else "– s/step",
            eta=fmt_duration(eta),
            losses=_losses(metrics),
        )
        if evals := _evals(metrics):
            self.bar.console.print(
                f"[{self.stage}] step {step}/{iters}: {evals}", markup=False, highlight=False
            )
        if metrics.get("diverged"):
            self.bar.console.print(f"[{self.stage}] DIVERGED at step {step} (non-finite loss)", markup=False)
        return metrics

    def close(self) -> None:
        self.bar.stop()


def train_reporter(stage: str, cfg: Any, in_process: bool) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(reporter factory, close) for one stage of ``csrgan train``: the bar when the stage runs in this
    process and stdout is a terminal, else :class:`TrainLines` (plain, picklable for Ray workers)."""
    iters = stage_iters(cfg, stage)
    if not (in_process and is_terminal()):
        return TrainLines(stage, iters, marked=not in_process), lambda: None
    holder: list[TrainBar] = []
    pid = os.getpid()

    def factory() -> TrainBar:
        assert os.getpid() == pid, "the progress bar belongs to the CLI process"
        holder.append(TrainBar(stage, iters))
        return holder[-1]

    def close() -> None:
        for bar in holder:
            bar.close()

    return factory, close
