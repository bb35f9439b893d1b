"""Turn a trial's reports into Parquet rows, one per (evaluation step, test set).

The recorder keeps every row of its trial and rewrites the trial's file after each evaluation
(:class:`csrgan.results.ResultsStore` does the atomic write). On resume it reloads the rows already on
disk and drops those past the checkpoint it resumes from, so a killed-and-resumed trial never has
duplicate rows and never loses a finished evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from csrgan.results import ResultsStore

METRICS = ("psnr", "ssim", "lpips")


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


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f  # inf is a real value (PSNR of a perfect reconstruction)


class TrialRecorder:
    """Collects rows for one trial and persists them through a :class:`ResultsStore`."""

    def __init__(
        self, store: ResultsStore, trial_id: str, static: dict[str, Any], devices: float, test_sets: list[str]
    ) -> None:
        self.store = store
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
        for test_set, vals in per_set.items():
            self.rows.append(
                {
                    **self.static,
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
