"""The training-loop skeleton every stage shares; a trainer adds only its networks, losses and step.

:class:`TrainLoop` owns what the CycleGAN and the SR trainers have in common:

* **construction seeding** — ``torch.manual_seed(stage seed)`` before the subclass builds its networks,
  identically on every rank and in every process; after construction each rank's global RNGs are
  reseeded from :func:`derive_seed` (``(seed, rank)``), and captured in every checkpoint;
* **cadence** — after step ``s`` an evaluation runs when ``s % eval_every == 0`` and a checkpoint is
  written when ``s % checkpoint_every == 0``; the last step does both. Each event is ONE
  ``ctx.report`` on every rank (a barrier under Ray Train); only rank 0 evaluates and writes;
* **losses** — each step's losses are averaged over ranks (one all-reduce); a non-finite value on any
  rank stops every rank after one ``{"diverged": 1}`` report, with no checkpoint of the broken state;
  reports carry the means since the previous report (``loss/<name>``) and ``time/step_s``;
* **checkpoints** — the state (:mod:`csrgan.train.checkpoint` documents the layout) is staged in
  ``out_dir/.staging/step_XXXXXXXX`` and handed to the context, which persists it; per-rank state is
  gathered to every rank with ``all_gather_object``;
* **the artefact** — at the last step rank 0 publishes ``out_dir/final/`` (the full state plus the
  exported generator, :mod:`csrgan.models.artifacts`) by renaming a finished temporary folder;
* **resume** — from ``ctx.latest_checkpoint()``, refusing a checkpoint of another stage, config or
  world size; a run resumed at its last step trains nothing and reports its final metrics once more;
* **threads and efficiency** — ``resources.threads_per_worker`` (else the context's share of CPUs)
  threads while the loop runs; bf16 autocast (``resources.amp``), the ``channels_last`` memory format
  and ``torch.compile`` (``resources.compile``) as :func:`csrgan.train.efficiency.resolve` decides for
  the worker's device and the stage (``auto``: the measured faster setting; explicit values win). The
  values in effect are in every report (``setting/amp`` etc., :meth:`TrainLoop.settings`);
  ``time/eval_s`` is the wall time of the report's evaluation.

Subclasses fill :attr:`nets`, :attr:`optimizers` and :attr:`schedulers` (saved and restored by name),
name the net they export (:attr:`exported`) and implement :meth:`train_step`, :meth:`evaluate`,
:meth:`generator_spec` and :meth:`epoch_at`; per-rank state (image pools, LR-source generators) goes
through :meth:`rank_state` / :meth:`load_rank_state`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from csrgan.config import ExperimentConfig
from csrgan.metrics import PROTOCOL
from csrgan.models.artifacts import GeneratorSpec, save_generator
from csrgan.train.checkpoint import (
    CHECKPOINT_FORMAT,
    STATE_FILE,
    capture_rng,
    check_state,
    load_state,
    restore_rng,
    save_state,
    step_dir_name,
)
from csrgan.train.context import TrainContext, unwrap
from csrgan.train.efficiency import check_compiler, resolve, workload_of

__all__ = ["FINAL_DIR", "SETTING_PREFIX", "TrainLoop", "derive_seed", "evaluating", "run_loop"]

log = logging.getLogger(__name__)

FINAL_DIR = "final"
#: Report keys ``setting/<name>``: a run's constant settings, one result-row column each (TrainLoop.settings).
SETTING_PREFIX = "setting/"
STAGING_DIR = ".staging"
_TAG_GLOBAL = 0x474C  # "GL": the per-rank global RNG stream


def derive_seed(*parts: int, bits: Literal[32, 63] = 63) -> int:
    """An independent seed for the random stream named by ``parts`` (numpy ``SeedSequence`` hashing).

    63 bits (a non-negative int64) by default; 32 bits where a consumer needs them (numpy's legacy
    global seed).
    """
    seq = np.random.SeedSequence([int(p) for p in parts])
    if bits == 32:
        return int(seq.generate_state(1, np.uint32)[0])
    return int(seq.generate_state(1, np.uint64)[0] >> 1)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` (unwrapped) in eval mode for the block, then back to its previous mode."""
    plain = unwrap(module)
    was_training = plain.training
    plain.eval()
    try:
        yield plain
    finally:
        plain.train(was_training)


@contextlib.contextmanager
def _threads(cfg: ExperimentConfig, ctx: TrainContext) -> Iterator[None]:
    n = cfg.resources.threads_per_worker or ctx.threads
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_loop(build: Callable[[], TrainLoop], cfg: ExperimentConfig, ctx: TrainContext) -> dict[str, Any]:
    """Build a loop and run it under the thread policy; returns its last report."""
    if ctx.world_size > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(
            f"world_size is {ctx.world_size} but no torch.distributed process group is initialised "
            "(run the loop under Ray Train's TorchTrainer, or init_process_group first)"
        )
    with _threads(cfg, ctx):
        return build().run()


# ---------------------------------------------------------------------------------------- ranks
def _all_gather(ctx: TrainContext, obj: Any) -> list[Any]:
    """``obj`` of every rank, on every rank (a collective under DDP: all ranks must call it)."""
    if ctx.world_size == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def _mean_over_ranks(ctx: TrainContext, values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks; NaN/inf anywhere stays non-finite everywhere, so every rank stops together."""
    if ctx.world_size > 1:
        values = values.clone()
        torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
        values /= ctx.world_size
    return values


class _Window:
    """Loss sums and timing since the last report."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.reset()

    def reset(self) -> None:
        self.sums: torch.Tensor | None = None
        self.n = 0
        self.t0 = time.perf_counter()

    def add(self, names: list[str], values: torch.Tensor) -> None:
        self.names = names
        self.sums = values.double() if self.sums is None else self.sums + values.double()
        self.n += 1

    def pop(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.n and self.sums is not None:
            means = zip(self.names, self.sums.tolist(), strict=True)
            out = {f"loss/{k}": float(v) / self.n for k, v in means}
            out["time/step_s"] = (time.perf_counter() - self.t0) / self.n
        self.reset()
        return out


# ----------------------------------------------------------------------------------------- the loop
class TrainLoop(ABC):
    """One stage's training on one worker; :meth:`run` is the whole skeleton (see the module doc)."""

    #: the key in :attr:`nets` of the generator this stage exports as ``final/``
    exported: str

    def __init__(
        self,
        cfg: ExperimentConfig,
        ctx: TrainContext,
        *,
        stage: str,
        key: str,
        seed: int,
        iters: int,
        eval_every: int,
        checkpoint_every: int,
    ) -> None:
        self.cfg, self.ctx, self.stage, self.key, self.seed = cfg, ctx, stage, key, seed
        self.iters, self.eval_every, self.checkpoint_every = iters, eval_every, checkpoint_every
        self.device = torch.device(ctx.device)
        #: the switches in effect (``auto`` resolved for this device); trainers read these, not the config
        self.efficiency = resolve(cfg.resources, self.device, workload_of(stage))
        if self.efficiency.compile:
            check_compiler()
        self.amp_dtype = torch.bfloat16 if self.efficiency.amp else None
        self.channels_last = self.efficiency.channels_last
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.step = 0
        self.last_metrics: dict[str, Any] = {}
        torch.manual_seed(seed)  # everything random at construction, identically on every rank

    # ------------------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step on batch ``step``; returns detached 0-d losses (no host sync)."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Rank 0 only: ``{"<set>/<metric>": value}`` for the current networks."""

    @abstractmethod
    def generator_spec(self) -> GeneratorSpec:
        """The spec of the exported generator (``generator.json``)."""

    @abstractmethod
    def epoch_at(self, step: int) -> float:
        """Fractional epochs completed before ``step``: a monotonic progress counter."""

    def provenance(self) -> str:
        """The ``weights`` value of every report: which pretrained backbones this run uses."""
        return "none"

    def settings(self) -> dict[str, Any]:
        """How this run trains, beyond its config hash: ``{name: scalar}``, constant for the run and
        written into every result row (as column ``name``; reports carry it as ``setting/<name>``).
        Subclasses extend the base's: the efficiency switches actually in effect."""
        e = self.efficiency
        return {"amp": e.amp, "channels_last": e.channels_last, "compile": e.compile}

    def window_metrics(self) -> dict[str, Any]:
        """Extra values for the next report (e.g. the learning rate); may reset per-window counters."""
        return {}

    def rank_state(self) -> dict[str, Any]:
        """This rank's own state besides the global RNGs (checkpointed per rank)."""
        return {}

    def export_extra(self, final: Path) -> None:  # noqa: B027 - optional hook
        """Write more of the artefact into ``final`` (rank 0; a temporary folder renamed into place after)."""

    def load_rank_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore :meth:`rank_state`."""

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def prepare(self, net: nn.Module) -> nn.Module:
        """``net`` in the configured memory format, on the device, DDP-wrapped when distributed, and
        ``torch.compile``-d around the DDP wrapper with ``resources.compile`` (the order PyTorch's DDP
        documentation recommends: its DDPOptimizer splits the graph at gradient-bucket boundaries so
        all-reduces still overlap the backward). :func:`unwrap` sees through both wrappers, so
        checkpoints keep plain keys and evaluation runs the eager module (no recompiles for eval mode or
        full-size test images); trainers' unwrapped frozen-discriminator calls are eager too."""
        prepared = self.ctx.prepare_model(net.to(memory_format=self.memory_format))
        return torch.compile(prepared) if self.efficiency.compile else prepared

    # ----------------------------------------------------------------------------------- skeleton
    def run(self) -> dict[str, Any]:
        s = derive_seed(self.seed, self.ctx.rank, _TAG_GLOBAL)
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)
        self.constant = {
            "phase": self.stage,
            "protocol": PROTOCOL.id,
            "weights": self.provenance(),
            **{f"{SETTING_PREFIX}{k}": v for k, v in self.settings().items()},
        }
        state = self._resume()
        for net in self.nets.values():
            net.train()
        if self.step >= self.iters:  # resumed a finished run: nothing to train, say where it ended
            if state is not None and self.ctx.rank == 0 and not (self.ctx.out_dir / FINAL_DIR).is_dir():
                self._publish_final(state)  # e.g. a checkpoint copied elsewhere: the artefact again
            self.ctx.report(self.last_metrics)
            return dict(self.last_metrics)
        window = _Window()
        while self.step < self.iters:
            losses = self._compiled_step() if self.efficiency.compile else self.train_step(self.step)
            self.step += 1
            values = torch.stack([v.detach().float() for v in losses.values()])
            values = _mean_over_ranks(self.ctx, values).cpu()  # one host sync per step
            if not bool(torch.isfinite(values).all()):
                return self._diverged(dict(zip(losses, values.tolist(), strict=True)))
            window.add(list(losses), values)
            is_last = self.step == self.iters
            do_eval = is_last or self.step % self.eval_every == 0
            do_ckpt = is_last or self.step % self.checkpoint_every == 0
            if do_eval or do_ckpt:
                self._event(window.pop(), do_eval, do_ckpt, is_last)
        if self.ctx.rank == 0:
            shutil.rmtree(self.ctx.out_dir / STAGING_DIR, ignore_errors=True)
        return dict(self.last_metrics)

    def _event(self, losses: dict[str, float], do_eval: bool, do_ckpt: bool, is_last: bool) -> None:
        metrics: dict[str, Any] = {
            **self.constant,
            "step": self.step,
            "iters": self.iters,  # so a watcher (progress bar, sweep view) knows the total
            "epoch": round(self.epoch_at(self.step), 6),
            "diverged": 0,
            **losses,
            **self.window_metrics(),
        }
        if do_eval and self.ctx.rank == 0:
            t0 = time.perf_counter()
            metrics.update(self.evaluate())
            metrics["time/eval_s"] = time.perf_counter() - t0
        self.last_metrics = metrics
        state = self._state() if do_ckpt else None  # a collective: every rank
        staged = None
        if state is not None:
            staged = self.ctx.out_dir / STAGING_DIR / step_dir_name(self.step)
            save_state(staged, state)
            if is_last:
                self._publish_final(state)
        try:
            self.ctx.report(metrics, staged)
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)  # the context persisted its own copy

    def _compiled_step(self) -> dict[str, torch.Tensor]:
        """A step of a compiled run: a failure to compile (the first step's, or a recompile's) names the
        field to turn off, instead of surfacing as an inductor traceback only."""
        try:
            return self.train_step(self.step)
        except torch._dynamo.exc.BackendCompilerFailed as exc:
            raise RuntimeError(
                f"resources.compile: torch.compile failed to compile {self.stage}'s networks on "
                f"{self.device} ({exc}); set resources.compile: false"
            ) from exc

    def _diverged(self, losses: Mapping[str, float]) -> dict[str, Any]:
        metrics = {
            **self.constant,
            "step": self.step,
            "epoch": round(self.epoch_at(self.step), 6),
            "diverged": 1,
            **{f"loss/{k}": v for k, v in losses.items()},
        }
        log.warning("%s diverged at step %d (non-finite loss): %s", self.stage, self.step, metrics)
        self.ctx.report(metrics)
        self.last_metrics = metrics
        return dict(metrics)

    # -------------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any] | None:
        """The full state on rank 0 (None on the others). A collective: every rank must call it."""
        ranks = _all_gather(self.ctx, {"rng": capture_rng(), **self.rank_state()})
        if self.ctx.rank != 0:
            return None
        return {
            "format": CHECKPOINT_FORMAT,
            "stage": self.stage,
            "key": self.key,
            "step": self.step,
            "world_size": self.ctx.world_size,
            "metrics": dict(self.last_metrics),
            "nets": {n: _cpu_state(m) for n, m in self.nets.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "ranks": ranks,
            "export": {"net": self.exported, "spec": self.generator_spec().to_json()},
        }

    def _publish_final(self, state: dict[str, Any]) -> None:
        """``out_dir/final/``: written whole into a temporary folder, then renamed into place."""
        out = self.ctx.out_dir
        tmp, old, final = out / ".final.tmp", out / ".final.old", out / FINAL_DIR
        shutil.rmtree(tmp, ignore_errors=True)
        save_state(tmp, state)
        save_generator(tmp, unwrap(self.nets[self.exported]), self.generator_spec())
        self.export_extra(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def _resume(self) -> dict[str, Any] | None:
        """Restore the newest checkpoint, if any; returns its state."""
        latest = self.ctx.latest_checkpoint()
        if latest is None:
            return None
        state = load_state(Path(latest))
        check_state(state, Path(latest) / STATE_FILE, self.stage, self.key, self.ctx.world_size)
        for name, net in self.nets.items():
            unwrap(net).load_state_dict(state["nets"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        mine = state["ranks"][self.ctx.rank]
        restore_rng(mine["rng"])
        self.load_rank_state(mine)
        self.step = int(state["step"])
        self.last_metrics = dict(state["metrics"])
        log.info("%s: resumed from %s at step %d", self.stage, latest, self.step)
        self.ctx.resumed(self.step)
        return state


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in unwrap(net).state_dict().items()}
