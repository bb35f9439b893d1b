"""The small object a trainer talks to instead of Ray: where it runs, how to report, where to resume.

* :class:`LocalContext` — one process, no Ray: checkpoints in ``out_dir/checkpoints/step_XXXXXXXX``,
  metrics appended to ``out_dir/metrics.jsonl``. Used by ``csrgan train ... --workers 0``, tests, and
  GPU boxes without Ray.
* ``csrgan.train.ray_train.RayTrainContext`` — the same interface over ``ray.train``.

Contract for trainers (mirrors Ray Train's rules so code that works locally works under Ray):
1. Every rank calls :meth:`report` the same number of times (it is a barrier under Ray Train).
2. Only rank 0's metrics and checkpoint count; other ranks pass ``checkpoint_dir=None``.
3. :meth:`latest_checkpoint` returns the directory of the newest persisted checkpoint (or ``None``):
   restore from it before the first iteration.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class TrainContext(Protocol):
    rank: int
    world_size: int
    device: torch.device
    out_dir: Path

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device; wrap in DDP when ``world_size > 1``. Unwrap with ``unwrap(model)``."""
        ...

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None: ...

    def latest_checkpoint(self) -> Path | None: ...


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return getattr(model, "module", model)


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


@dataclass
class LocalContext:
    """Single-process context. ``keep_checkpoints`` newest checkpoints are kept (older ones deleted)."""

    out_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    keep_checkpoints: int = 2
    rank: int = 0
    world_size: int = 1
    reports: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._t0 = time.time()

    @property
    def checkpoint_root(self) -> Path:
        return self.out_dir / "checkpoints"

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        row = {k: _jsonable(v) for k, v in metrics.items()}
        row.setdefault("wall_s", round(time.time() - self._t0, 3))
        if checkpoint_dir is not None:
            dest = self.checkpoint_root / Path(checkpoint_dir).name
            if Path(checkpoint_dir).resolve() != dest.resolve():
                tmp = dest.with_name(dest.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(checkpoint_dir, tmp)
                shutil.rmtree(dest, ignore_errors=True)
                tmp.rename(dest)  # a checkpoint either exists whole or not at all
            row["checkpoint"] = str(dest)
            self._prune()
        self.reports.append(row)
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def latest_checkpoint(self) -> Path | None:
        if not self.checkpoint_root.is_dir():
            return None
        done = self._completed()
        return done[-1] if done else None

    def _completed(self) -> list[Path]:
        """Whole checkpoints, oldest first: ``step_XXXXXXXX`` in step order, then ``final`` (run finished)."""
        done = [p for p in self.checkpoint_root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")]
        return sorted(done, key=lambda p: (p.name == "final", p.name))

    def _prune(self) -> None:
        done = self._completed()
        for old in done[: -self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
