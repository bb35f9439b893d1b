"""Turn a trial's reports into Parquet rows, one per (evaluation step, test set).

The recorder keeps every row of its trial and rewrites the trial's file after each evaluation
(:class:`csrgan.results.ResultsStore` does the atomic write). On resume it reloads the rows already on
disk and drops those past the checkpoint it resumes from, so a killed-and-resumed trial never has
duplicate rows and never loses a finished evaluation.

:class:`TrialRows` is the picklable reporter factory the sweep hands to the launcher
(:mod:`csrgan.train.launch`): the launcher builds a :class:`TrialReporter` on rank 0 of whichever
process runs the GAN phase (the trial itself, or rank 0 of its Ray Train group), so the trainer never
knows it is being recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from csrgan.results import ResultsStore
from csrgan.results.schema import BASELINE_METRICS, METRICS
from csrgan.storage import SweepLayout
from csrgan.train.checkpoint import step_dir_name
from csrgan.train.context import CHECKPOINTS_DIR
from csrgan.train.loop import FINAL_DIR, SETTING_PREFIX

#: The columns that lead from a row to the files behind it (paths relative to the storage root).
ARTEFACT_COLUMNS = ("run_dir", "checkpoint", "grid")


def eval_rows(metrics: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{"bicubic/psnr": 25.1}`` -> ``{"bicubic": {"psnr": 25.1, "ssim": None, "lpips": None}}``."""
    out: dict[str, dict[str, float | None]] = {}
    for key, value in metrics.items():
        if "/" not in key:
            continue
        test_set, metric = key.rsplit("/", 1)
        if metric in METRICS and not key.startswith("loss/"):
            out.setdefault(test_set, dict.fromkeys(METRICS))[metric] = _num(value)
    return out


@dataclass(frozen=True)
class RunFiles:
    """Where one run (a trial's GAN phase, a shared stage) keeps its files, for a row's artefact columns.

    ``root`` is the storage root and ``run_dir`` the run's folder under it; paths in rows are relative to
    ``root`` (POSIX), so a results folder that is moved or copied with its ``_stages`` still resolves.
    The checkpoint of a step is the run's ``final/`` at its last step (the artefact ``csrgan evaluate``,
    ``upscale`` and ``export`` take; never pruned), else ``checkpoints/step_XXXXXXXX`` when the cadence
    wrote one (the newest two are kept, so an older row may name a pruned folder), else None.
    """

    root: Path
    run_dir: Path
    phase: str
    iters: int
    checkpoint_every: int

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def columns(self, step: int, test_set: str) -> dict[str, str | None]:
        if step >= self.iters:
            ckpt: Path | None = self.run_dir / FINAL_DIR
        elif self.checkpoint_every > 0 and step % self.checkpoint_every == 0:
            ckpt = self.run_dir / CHECKPOINTS_DIR / step_dir_name(step)
        else:
            ckpt = None
        grid = self.run_dir / "grids" / self.phase / f"{test_set}_step{step}.png"
        return {
            "run_dir": self._rel(self.run_dir),
            "checkpoint": None if ckpt is None else self._rel(ckpt),
            "grid": self._rel(grid) if grid.is_file() else None,  # written by the evaluation just before
        }


def baseline_columns(baseline: Mapping[str, float], test_set: str) -> dict[str, float | None]:
    """``baseline_psnr``/``baseline_ssim`` of ``test_set`` from ``{"<set>/psnr": ...}`` (None if absent)."""
    return {f"baseline_{m}": _num(baseline.get(f"{test_set}/{m}")) for m in BASELINE_METRICS}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f  # inf is a real value (PSNR of a perfect reconstruction)


class TrialRecorder:
    """Collects rows for one trial and persists them through a :class:`ResultsStore`."""

    def __init__(
        self,
        store: ResultsStore,
        trial_id: str,
        static: dict[str, Any],
        devices: float,
        test_sets: list[str],
        files: Mapping[str, RunFiles] | None = None,
        baseline: Mapping[str, float] | None = None,
    ) -> None:
        self.store = store
        self.files = dict(files or {})  # phase -> where that phase's run keeps its files
        self.baseline = dict(baseline or {})
        self.trial_id = trial_id
        self.static = static
        self.devices = devices
        self.test_sets = test_sets
        self.status = "running"
        self.rows: list[dict[str, Any]] = self._existing_rows()
        self._wall_offset = max((r.get("wall_s") or 0.0 for r in self.rows), default=0.0)
        self._t0 = time.time()

    def _existing_rows(self) -> list[dict[str, Any]]:
        df = self.store.read_trial(self.trial_id)
        if df is None or df.empty:
            return []
        return [{k: (None if _is_nan(v) else v) for k, v in r.items()} for r in df.to_dict("records")]

    def resume_from(self, phase: str, step: int) -> None:
        """Forget rows of ``phase`` after ``step``: they are recomputed from the checkpoint at ``step``."""
        self.rows = [r for r in self.rows if not (r["phase"] == phase and r["step"] > step)]

    def wall_s(self) -> float:
        return self._wall_offset + time.time() - self._t0

    def record(self, metrics: Mapping[str, Any], phase: str | None = None) -> bool:
        """Add rows for the test-set metrics in ``metrics`` (if any) and persist. True if rows were added."""
        per_set = eval_rows(metrics)
        for key in ("protocol", "weights"):
            if isinstance(metrics.get(key), str):
                self.static[key] = metrics[key]
        for key, value in metrics.items():  # the run's settings (TrainLoop.settings): one column each
            if key.startswith(SETTING_PREFIX):
                self.static[key.removeprefix(SETTING_PREFIX)] = value
        if metrics.get("diverged"):
            self.status = "diverged"
        if not per_set:
            if self.status == "diverged":
                self.flush()
            return False
        phase = phase or str(metrics.get("phase", "gan"))
        step = int(metrics.get("step", 0))
        wall = self.wall_s()
        now = datetime.now(UTC)
        self.rows = [r for r in self.rows if not (r["phase"] == phase and r["step"] == step)]
        files = self.files.get(phase)
        for test_set, vals in per_set.items():
            self.rows.append(
                {
                    **self.static,
                    **(files.columns(step, test_set) if files else {}),
                    **baseline_columns(self.baseline, test_set),
                    "phase": phase,
                    "step": step,
                    "test_set": test_set,
                    **vals,
                    "wall_s": round(wall, 3),
                    "device_s": round(wall * self.devices, 3),
                    "created_at": now,
                }
            )
        self.flush()
        return True

    def flush(self, status: str | None = None) -> None:
        if status is not None:
            self.status = status
        if not self.rows and self.status in ("diverged", "error"):
            # Failed before its first evaluation: one all-null row per test set keeps the trial visible
            # (counted as diverged/error by the summary) without inventing a metric value.
            self.record({f"{t}/psnr": None for t in self.test_sets} | {"step": 0}, phase="gan")
            return
        self.store.write_trial(self.trial_id, self.rows, status=self.status)


@dataclass(frozen=True)
class TrialRows:
    """Where one trial's rows go and what they all carry; builds recorders and reporters for it."""

    layout: SweepLayout
    trial_id: str
    static: dict[str, Any]
    devices: float
    test_sets: tuple[str, ...] = field(default_factory=tuple)
    phase: str = "gan"
    files: dict[str, RunFiles] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    #: called after every report (object storage: :class:`csrgan.storage.remote.FolderSync` of the run)
    after_report: Callable[[], Any] | None = None

    def recorder(self) -> TrialRecorder:
        """A recorder holding the rows already on disk."""
        store = ResultsStore(self.layout.results_root, self.layout.sweep)
        return TrialRecorder(
            store,
            self.trial_id,
            dict(self.static),
            self.devices,
            list(self.test_sets),
            self.files,
            self.baseline,
        )

    def __call__(self) -> TrialReporter:
        return TrialReporter(self.recorder(), self.phase, self.after_report)


class TrialReporter:
    """The sweep's :class:`csrgan.train.context.Reporter`: records each evaluation as rows, and carries
    the last evaluation's metrics forward into every later report, so the scheduler and the searcher
    always see the sweep's metric."""

    def __init__(
        self, recorder: TrialRecorder, phase: str, after_report: Callable[[], Any] | None = None
    ) -> None:
        self.recorder, self.phase, self.after_report = recorder, phase, after_report
        self.last_eval: dict[str, Any] = {}

    def resumed(self, step: int) -> None:
        self.recorder.resume_from(self.phase, step)

    def report(self, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        out = dict(metrics)
        if self.recorder.record(out, self.phase):
            self.last_eval = {k: v for k, v in out.items() if _is_eval_key(k)}
        for k, v in self.last_eval.items():
            out.setdefault(k, v)
        if self.after_report is not None:
            self.after_report()
        return out


def _is_eval_key(key: str) -> bool:
    return "/" in key and not key.startswith("loss/") and key.rsplit("/", 1)[1] in METRICS


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def git_commit(repo: Path | None = None) -> str | None:
    """The checkout's commit (``+dirty`` when there are uncommitted changes), or None outside git."""
    import subprocess

    cwd = repo or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha
