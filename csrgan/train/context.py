"""What a trainer talks to instead of Ray: where it runs, how it reports, where it resumes from.

A training loop (:class:`csrgan.train.loop.TrainLoop`) gets a :class:`TrainContext`. Two exist:

* :class:`LocalContext` — this process, no Ray: ``csrgan train --workers 0``, 1-worker sweep trials,
  tests. Checkpoints are copied to ``out_dir/checkpoints/step_XXXXXXXX`` (the newest two kept).
* :class:`csrgan.train.ray_train.RayTrainContext` — one worker of a Ray Train group; Ray persists
  checkpoints to the same folder (``storage_path=out_dir``, run name ``checkpoints``).

Both write the same ``out_dir`` layout (``metrics.jsonl``, ``checkpoints/``; the loop adds ``final/``
and ``grids/``), and both hand every report, on rank 0, to an optional :class:`Reporter` first: the
hook through which a caller (the sweep's Parquet rows, a progress printer) watches a run without the
trainer knowing about it. The reporter is built from a picklable factory on rank 0 of whichever
process group runs the loop, so the same hook works in-process and inside Ray Train workers.

Contract for loops (mirrors Ray Train's rules, so what works locally works under Ray):
1. Every rank calls :meth:`TrainContext.report` the same number of times (a barrier under Ray Train).
2. Only rank 0 passes a checkpoint; only rank 0's metrics count.
3. :meth:`TrainContext.latest_checkpoint` is the newest persisted checkpoint (or None); after restoring
   from it the loop calls :meth:`TrainContext.resumed` with the step it continues from.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "ContextBase",
    "LocalContext",
    "Reporter",
    "ReporterFactory",
    "TrainContext",
    "unwrap",
]

CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"


class Reporter(Protocol):
    """Watches one run on rank 0; may add keys to what is reported onwards (never removes any)."""

    def resumed(self, step: int) -> None:
        """The run continues from a checkpoint at ``step``: anything recorded after it is stale."""
        ...

    def report(self, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        """Called with every report before it is persisted and passed on; returns what to pass on."""
        ...


#: Builds the run's reporter on rank 0 (must be picklable: Ray ships it to the workers).
ReporterFactory = Callable[[], Reporter]


@runtime_checkable
class TrainContext(Protocol):
    rank: int
    world_size: int
    device: torch.device
    out_dir: Path
    #: CPU threads this worker may use (None: leave torch's default, e.g. a whole local machine).
    threads: int | None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device; wrap in DDP when ``world_size > 1``. Unwrap with :func:`unwrap`."""
        ...

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None: ...

    def latest_checkpoint(self) -> Path | None: ...

    def resumed(self, step: int) -> None: ...


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP and ``torch.compile`` wrappers, in either nesting (or the module
    itself): what owns the parameters and the plain ``state_dict`` keys (no ``module.`` or
    ``_orig_mod.`` prefixes), and what runs eagerly (evaluation, frozen-discriminator calls)."""
    for _ in range(4):  # at most compile(DDP(compile(net))): never loop on an odd attribute
        inner = model.__dict__.get("_modules", {}).get("_orig_mod")  # OptimizedModule
        if inner is None:
            inner = getattr(model, "module", None)  # DDP (and duck-typed wrappers)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner
    return model


def jsonable(v: Any) -> Any:
    """A report value as plain JSON: tensors to numbers, NaN to null, infinities to strings."""
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


class ContextBase:
    """What every context shares: the rank-0 reporter and ``out_dir/metrics.jsonl``."""

    def __init__(
        self,
        out_dir: Path,
        rank: int,
        world_size: int,
        device: torch.device,
        reporter: ReporterFactory | None = None,
        threads: int | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.rank, self.world_size, self.device, self.threads = rank, world_size, device, threads
        self.reporter: Reporter | None = reporter() if reporter is not None and rank == 0 else None
        self._t0 = time.time()
        self._resumed_from: int | None = None
        if rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def resumed(self, step: int) -> None:
        self._resumed_from = step  # said once, in the next metrics.jsonl line
        if self.reporter is not None:
            self.reporter.resumed(step)

    def _observe(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Rank 0: let the reporter see (and extend) the metrics. Every rank gets plain numbers back."""
        plain = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        if self.reporter is not None:
            plain = dict(self.reporter.report(plain))
        return plain

    def _log(self, metrics: Mapping[str, Any], checkpoint: str | None) -> dict[str, Any]:
        """Rank 0: append one line to ``metrics.jsonl``; returns that line. The first line after a
        resume says where the run continued from (``resumed_from``): after a worker-group restart the
        steps since that checkpoint appear twice in the file, or, when none were lost, just go on."""
        row = {k: jsonable(v) for k, v in metrics.items()}
        row.setdefault("wall_s", round(time.time() - self._t0, 3))
        if checkpoint is not None:
            row["checkpoint"] = checkpoint
        if self._resumed_from is not None:
            row["resumed_from"], self._resumed_from = self._resumed_from, None
        if self.rank == 0:
            with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return row


class LocalContext(ContextBase):
    """Single-process context. ``keep_checkpoints`` newest checkpoints are kept (older ones deleted).

    ``forward``: where each (reporter-extended) report goes next, e.g. ``ray.tune.report`` when the
    loop runs inside a Tune trial. ``reports`` keeps every ``metrics.jsonl`` line (handy in tests).
    """

    def __init__(
        self,
        out_dir: str | Path,
        device: str | torch.device = "cpu",
        keep_checkpoints: int = 2,
        reporter: ReporterFactory | None = None,
        forward: Callable[[dict[str, Any]], None] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(Path(out_dir), 0, 1, torch.device(device), reporter, threads)
        self.keep_checkpoints = keep_checkpoints
        self.forward = forward
        self.reports: list[dict[str, Any]] = []

    @property
    def checkpoint_root(self) -> Path:
        return self.out_dir / CHECKPOINTS_DIR

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        metrics = self._observe(metrics)
        dest = None if checkpoint_dir is None else self._persist(Path(checkpoint_dir))
        self.reports.append(self._log(metrics, None if dest is None else str(dest)))
        if self.forward is not None:
            self.forward(metrics)

    def _persist(self, src: Path) -> Path:
        """Copy a staged checkpoint into ``checkpoints/``: it either exists whole or not at all."""
        dest = self.checkpoint_root / src.name
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        for old in self._completed()[: -self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return dest

    def latest_checkpoint(self) -> Path | None:
        done = self._completed()
        return done[-1] if done else None

    def _completed(self) -> list[Path]:
        """Whole checkpoints (``step_XXXXXXXX``), oldest first."""
        if not self.checkpoint_root.is_dir():
            return []
        return sorted(p for p in self.checkpoint_root.iterdir() if p.is_dir() and not p.name.endswith(".tmp"))
