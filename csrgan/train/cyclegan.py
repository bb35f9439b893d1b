"""Stage 1 trainer: a CycleGAN that learns ``G: X -> Y`` (bicubic LR -> real LR) from unpaired patches.

One per-worker loop function, :func:`train_cyclegan`, that runs under Ray Train (one call per worker,
DDP) or alone in one process (:class:`csrgan.train.context.LocalContext`). It follows the authors'
``cycle_gan_model.py`` (junyanz/pytorch-CycleGAN-and-pix2pix) step for step.

Naming convention (junyanz's code names, with the paper's symbols):

=========  ===================  ===========================================================
code       paper (Zhu et al.)   here
=========  ===================  ===========================================================
real_A     x ∈ X                bicubic LR patch (MATLAB bicubic of an HR image of ``data.train_hr``)
real_B     y ∈ Y                real LR patch (``data.real_lr``, unpaired)
G_A        G: X -> Y            bicubic -> real-like LR; **the network CSR-GAN keeps** (``final/``)
G_B        F: Y -> X            real -> bicubic-like LR; only needed for the cycle losses
D_A        D_Y                  judges Y: real ``y`` vs ``G(x)``
D_B        D_X                  judges X: bicubic ``x`` vs ``F(y)``
=========  ===================  ===========================================================

Losses per iteration (λ = ``cyclegan.lambda_cycle``, λ_idt = ``cyclegan.lambda_identity``):

* generators (one Adam over G_A and G_B): ``L_GAN(D_Y(G(x)), 1) + L_GAN(D_X(F(y)), 1)`` (LSGAN, i.e.
  MSE to the label) ``+ λ (|F(G(x)) - x|_1 + |G(F(y)) - y|_1)`` ``+ λ_idt λ (|G(y) - y|_1 + |F(x) - x|_1)``;
* discriminators (one Adam over D_A and D_B): ``0.5 (L_GAN(D_Y(y), 1) + L_GAN(D_Y(ŷ), 0))`` and the same
  for ``D_X``, where ``ŷ`` / ``x̂`` are drawn from image pools (history of 50 fakes; Shrivastava et al.).

Adam(lr, betas=(beta1, 0.999)); the learning rate is constant until ``decay_start`` (default
``iters // 2``) and then decays linearly to 0 at ``iters`` (:class:`LinearDecay`). Reported losses
(``loss/cycle``, ``loss/idt``, ``loss/g_gan``, ``loss/d``, ``loss/g``) are the terms *as weighted in the
objective*, summed over both directions, averaged over the iterations since the previous report and
over ranks.

Data. The X domain is always MATLAB bicubic of ``data.train_hr`` (never ``data.train_lr``): the SR stage
applies ``G`` to exactly that kind of input, and :func:`csrgan.config.cyclegan_stage_key` does not
depend on ``train_lr``. An X sample is the LR crop aligned with a random HR patch of side
``patch_size * scale``, cut from the bicubic LR of the whole image (so no resize-border artefacts);
a Y sample is a random ``patch_size`` crop of a real LR image. Both with random flips/transposes.
``batch_size`` is per worker. Sampling is stateless (:class:`csrgan.train.sampling.IterationSampler`):
each step's patches depend only on ``(seed, step, rank)``, so the data position is the step.

Distributed. Each of G_A, G_B, D_A, D_B goes through ``ctx.prepare_model`` separately. In the
generator step the discriminators are frozen and called *unwrapped*: their DDP wrappers exist to
all-reduce D gradients, and a frozen D has none (a DDP forward there would only add bookkeeping).
Evaluation runs on rank 0 with the unwrapped G_A (no collectives), while the other ranks wait in
``ctx.report``; every rank reports at the same steps. Checkpoints hold each rank's own RNG states and
image pools (gathered to rank 0), so a multi-worker run resumes bit-for-bit too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from csrgan.config import CycleGANConfig, ExperimentConfig, cyclegan_stage_key
from csrgan.data.datasets import PairedPatchDataset, UnpairedPatchDataset
from csrgan.data.io import to_tensor, to_uint8, write_image
from csrgan.losses import GANLoss, ImagePool, cycle_loss, identity_loss
from csrgan.models.cyclegan import NLayerDiscriminator, ResnetGenerator, init_weights
from csrgan.train.checkpoint import (
    STATE_FILE,
    capture_rng,
    load_state,
    restore_rng,
    save_state,
    step_dir_name,
)
from csrgan.train.context import TrainContext, unwrap
from csrgan.train.sampling import IterationSampler, make_batch

__all__ = [
    "CHECKPOINT_KIND",
    "GENERATOR_CONFIG_FILE",
    "GENERATOR_FILE",
    "LOSS_KEYS",
    "PHASE",
    "CheckpointMismatchError",
    "LinearDecay",
    "generator_config",
    "load_generator",
    "read_generator_config",
    "save_generator",
    "train_cyclegan",
]

log = logging.getLogger(__name__)

PHASE = "cyclegan"
CHECKPOINT_KIND = "csrgan.cyclegan/v1"
GENERATOR_FORMAT = "csrgan.cyclegan.generator/v1"
GENERATOR_FILE = "generator.pt"
GENERATOR_CONFIG_FILE = "generator.json"
LOSS_KEYS = ("loss/cycle", "loss/idt", "loss/g_gan", "loss/d", "loss/g")
#: The "weights" report value: this stage loads no pretrained backbone (Table 2 is PSNR/SSIM only).
WEIGHTS_PROVENANCE = "none (cyclegan: no pretrained backbones)"

# Independent random streams, derived from (cfg.cyclegan.seed, stream[, rank]) by numpy's SeedSequence.
_STREAM_X, _STREAM_Y, _STREAM_POOL_Y, _STREAM_POOL_X, _STREAM_GLOBAL = range(5)
_NETS = ("G_A", "G_B", "D_A", "D_B")


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not belong to this run (other stage, config or world size)."""


# ------------------------------------------------------------------------------------------ schedule
class LinearDecay:
    """``LambdaLR`` factor: 1 for ``step < decay_start``, then linear to exactly 0 at ``step == iters``.

    ``step`` is the number of optimiser steps taken so far, so the update of iteration ``i`` (0-based)
    uses ``lr * factor(i)``. Junyanz's epoch rule ``1 - max(0, e - n) / (n_decay + 1)`` never reaches 0;
    here the last update (``i = iters - 1``) uses ``lr / (iters - decay_start)`` and the factor is 0 at
    ``iters``. A plain class (not a lambda) so ``LambdaLR.state_dict()`` records its parameters.
    """

    def __init__(self, iters: int, decay_start: int) -> None:
        if not 0 <= decay_start <= iters:
            raise ValueError(f"LinearDecay: need 0 <= decay_start <= iters, got {decay_start}, {iters}")
        self.iters = int(iters)
        self.decay_start = int(decay_start)

    @classmethod
    def from_config(cls, cg: CycleGANConfig) -> LinearDecay:
        """``cyclegan.decay_start`` (default ``iters // 2``) and ``cyclegan.iters``."""
        return cls(cg.iters, cg.iters // 2 if cg.decay_start is None else cg.decay_start)

    def __call__(self, step: int) -> float:
        if step < self.decay_start:
            return 1.0
        if step >= self.iters:
            return 0.0
        return (self.iters - step) / (self.iters - self.decay_start)


# -------------------------------------------------------------------------------- generator artefact
def generator_config(cfg: ExperimentConfig, **extra: Any) -> dict[str, Any]:
    """The ``generator.json`` content for this experiment's G (architecture + data scale + ``extra``)."""
    m = cfg.cyclegan.model
    return {
        "format": GENERATOR_FORMAT,
        "arch": "resnet_generator",
        "mapping": "G: X (bicubic LR) -> Y (real LR)",
        "in_ch": 3,
        "out_ch": 3,
        "ngf": m.ngf,
        "n_blocks": m.n_blocks,
        "n_down": 2,
        "norm": "instance",
        "scale": cfg.data.scale,
        **extra,
    }


def _build_generator(model_cfg: Mapping[str, Any], source: str) -> ResnetGenerator:
    missing = sorted({"ngf", "n_blocks", "scale"} - set(model_cfg))
    if missing:
        raise ValueError(f"{source}: generator config lacks {missing}")
    if model_cfg.get("arch", "resnet_generator") != "resnet_generator":
        raise ValueError(f"{source}: arch {model_cfg['arch']!r} is not 'resnet_generator'")
    try:
        return ResnetGenerator(
            in_ch=int(model_cfg.get("in_ch", 3)),
            out_ch=int(model_cfg.get("out_ch", 3)),
            ngf=int(model_cfg["ngf"]),
            n_blocks=int(model_cfg["n_blocks"]),
            n_down=int(model_cfg.get("n_down", 2)),
            norm=model_cfg.get("norm", "instance"),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: invalid generator config: {exc}") from None


def save_generator(directory: str | Path, G: nn.Module, model_cfg: Mapping[str, Any]) -> Path:
    """Write ``directory/generator.pt`` (G's state dict, CPU tensors) and ``directory/generator.json``.

    ``model_cfg`` needs ``ngf``, ``n_blocks`` and ``scale`` (the data scale G was trained for); use
    :func:`generator_config`. ``G`` may be DDP-wrapped. The state dict is checked against the config
    before anything is written, so a mismatched pair never reaches disk. Returns ``directory``.
    """
    directory = Path(directory)
    state = {k: v.detach().cpu().clone() for k, v in unwrap(G).state_dict().items()}
    try:
        _build_generator(model_cfg, "save_generator").load_state_dict(state)  # strict
    except RuntimeError as exc:
        raise ValueError(
            f"save_generator({directory}): G's weights do not fit {dict(model_cfg)}: {exc}"
        ) from None
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as f:
        tmp = Path(f.name)
    torch.save(state, tmp)
    tmp.replace(directory / GENERATOR_FILE)
    (directory / GENERATOR_CONFIG_FILE).write_text(
        json.dumps(dict(model_cfg), indent=2, sort_keys=True) + "\n"
    )
    return directory


def _resolve_generator(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(config, state dict, description) from a final/ folder, a generator.pt, or a checkpoint folder."""
    path = Path(path)
    if path.is_dir() and (path / GENERATOR_FILE).is_file():
        weights = path / GENERATOR_FILE
    elif path.is_file() and path.name != STATE_FILE:
        weights = path
    elif path.is_dir() and (path / STATE_FILE).is_file():
        state = load_state(path)
        if state.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{path / STATE_FILE}: not a CycleGAN checkpoint (kind {state.get('kind')!r})")
        return dict(state["generator_config"]), state["models"]["G_A"], str(path / STATE_FILE)
    else:
        raise FileNotFoundError(
            f"no CycleGAN generator at {path}: expected a folder with {GENERATOR_FILE} + "
            f"{GENERATOR_CONFIG_FILE} (the stage's final/ folder), a {GENERATOR_FILE} file, or a "
            f"CycleGAN checkpoint folder with {STATE_FILE}"
        )
    cfg_path = weights.with_name(GENERATOR_CONFIG_FILE)
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{weights}: its model config {cfg_path} is missing")
    try:
        model_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path}: not valid JSON: {exc}") from None
    if not isinstance(model_cfg, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object")
    try:
        state_dict = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem: say which file
        raise ValueError(f"{weights}: cannot load generator weights: {exc}") from exc
    return model_cfg, state_dict, str(weights)


def read_generator_config(path: str | Path) -> dict[str, Any]:
    """The model config stored with a generator (same ``path`` forms as :func:`load_generator`)."""
    return _resolve_generator(path)[0]


def load_generator(
    path: str | Path, device: torch.device | str = "cpu", scale: int | None = None
) -> ResnetGenerator:
    """The trained ``G: X -> Y`` on ``device``, in eval mode with frozen parameters.

    ``path``: the stage's ``final/`` folder (``generator.pt`` + ``generator.json``), the ``generator.pt``
    file itself, or a CycleGAN checkpoint folder (``step_XXXXXXXX`` with ``state.pt``). Loaded with
    ``torch.load(weights_only=True)``. With ``scale``, the data scale G was trained for must match
    (a G trained on x2 LR does not make x4 LR real-like).
    """
    model_cfg, state_dict, source = _resolve_generator(path)
    if scale is not None and int(model_cfg["scale"]) != int(scale):
        raise ValueError(f"{source}: generator was trained for x{model_cfg['scale']} LR, not x{scale}")
    G = _build_generator(model_cfg, source)
    try:
        G.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not match its config {model_cfg}: {exc}") from None
    G.to(device).eval().requires_grad_(False)
    return G


# ------------------------------------------------------------------------------------------- helpers
def _derive_seed(seed: int, *keys: int) -> int:
    """An independent 32-bit seed for stream ``keys`` of experiment seed ``seed``."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint32)[0])


def _dist() -> Any | None:
    """``torch.distributed`` when a process group is up, else None."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed
    return None


def _check_context(cfg: ExperimentConfig, ctx: TrainContext) -> None:
    if ctx.world_size > 1 and _dist() is None:
        raise RuntimeError(
            f"train_cyclegan: world_size is {ctx.world_size} but no torch.distributed process group is "
            "initialised (run it under Ray Train's TorchTrainer or init_process_group first)"
        )
    if cfg.resources.amp and ctx.device.type != "cuda":
        raise ValueError(
            f"resources.amp: bf16 autocast is for GPUs, but this worker runs on {ctx.device}; "
            "set resources.amp: false (or give the workers GPUs)"
        )
    for field in ("train_hr", "real_lr"):
        if getattr(cfg.data, field) is None:
            raise ValueError(
                f"data.{field} is not set: the CycleGAN needs bicubic LR from data.train_hr (domain X) and "
                "real LR images in data.real_lr (domain Y); resolve the config with "
                "csrgan.data.layout.resolve_data first when using data.demo"
            )


@dataclass
class _Data:
    """Both domains' patch datasets and their (stateless) samplers."""

    x: PairedPatchDataset
    y: UnpairedPatchDataset
    x_sampler: IterationSampler
    y_sampler: IterationSampler
    device: torch.device
    memory_format: torch.memory_format

    @classmethod
    def build(cls, cfg: ExperimentConfig, ctx: TrainContext, memory_format: torch.memory_format) -> _Data:
        cg, d = cfg.cyclegan, cfg.data
        assert d.train_hr is not None and d.real_lr is not None  # _check_context
        x_seed, y_seed = (
            _derive_seed(cfg.cyclegan.seed, _STREAM_X),
            _derive_seed(cfg.cyclegan.seed, _STREAM_Y),
        )
        x = PairedPatchDataset(
            d.train_hr,
            scale=d.scale,
            patch_size=cg.patch_size * d.scale,
            lr_dir=None,
            augment=True,
            cache=d.cache,
            seed=x_seed,
        )
        y = UnpairedPatchDataset(
            d.real_lr, patch_size=cg.patch_size, augment=True, cache=d.cache, seed=y_seed
        )
        return cls(
            x=x,
            y=y,
            x_sampler=IterationSampler(len(x), cg.batch_size, x_seed, ctx.rank, ctx.world_size),
            y_sampler=IterationSampler(len(y), cg.batch_size, y_seed, ctx.rank, ctx.world_size),
            device=ctx.device,
            memory_format=memory_format,
        )

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(real_A = x, real_B = y) for this rank at ``step``, on the device."""
        xb, yb = self.x_sampler.batch(step), self.y_sampler.batch(step)
        x = make_batch(self.x, [i for _, i in xb], [e for e, _ in xb])["lr"]
        y = make_batch(self.y, [i for _, i in yb], [e for e, _ in yb])["image"]
        return self._to_device(x), self._to_device(y)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)


@dataclass
class _Nets:
    G_A: nn.Module
    G_B: nn.Module
    D_A: nn.Module
    D_B: nn.Module

    def items(self) -> Iterator[tuple[str, nn.Module]]:
        for name in _NETS:
            yield name, getattr(self, name)


def _build_nets(cfg: ExperimentConfig) -> _Nets:
    """Junyanz's networks and init (normal, gain 0.02), identical on every rank (``cyclegan.seed``)."""
    m = cfg.cyclegan.model
    torch.manual_seed(cfg.cyclegan.seed)
    return _Nets(
        G_A=init_weights(ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks)),
        G_B=init_weights(ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks)),
        D_A=init_weights(NLayerDiscriminator(ndf=m.ndf, n_layers=m.n_layers_d)),
        D_B=init_weights(NLayerDiscriminator(ndf=m.ndf, n_layers=m.n_layers_d)),
    )


def _seed_globals(seed: int, rank: int) -> None:
    """Per-rank global RNGs (nothing in the loop draws from them today; seeded so nothing can drift)."""
    s = _derive_seed(seed, _STREAM_GLOBAL, rank)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        unwrap(net).requires_grad_(flag)


# ------------------------------------------------------------------------------------- checkpointing
def _load_checkpoint(path: Path, cfg: ExperimentConfig, ctx: TrainContext) -> dict[str, Any]:
    state = load_state(path)
    where = Path(path) / STATE_FILE
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointMismatchError(
            f"{where}: not a CycleGAN checkpoint (kind {state.get('kind')!r}, expected {CHECKPOINT_KIND!r})"
        )
    key = cyclegan_stage_key(cfg)
    if state["stage_key"] != key:
        raise CheckpointMismatchError(
            f"{where}: written by a different CycleGAN configuration (stage key {state['stage_key']} != "
            f"{key}: seed, data, cyclegan.* or resources.workers differ); resume with the original config "
            "or start in a new output folder"
        )
    if len(state["ranks"]) != ctx.world_size:
        raise CheckpointMismatchError(
            f"{where}: written by {len(state['ranks'])} worker(s), this run has {ctx.world_size}"
        )
    return state


def _rank_state(pools: Mapping[str, ImagePool]) -> dict[str, Any]:
    return {"rng": capture_rng(), "pools": {k: p.state_dict() for k, p in pools.items()}}


def _gather_rank_states(local: dict[str, Any], ctx: TrainContext) -> list[dict[str, Any]] | None:
    """Every rank's RNG/pool state on rank 0 (None elsewhere). A collective: all ranks must call it."""
    dist = _dist()
    if dist is None or ctx.world_size == 1:
        return [local]
    gathered: list[Any] | None = [None] * ctx.world_size if ctx.rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    return gathered


# ------------------------------------------------------------------------------------------ the loop
@dataclass
class _Trainer:
    cfg: ExperimentConfig
    ctx: TrainContext
    nets: _Nets
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    sched_G: torch.optim.lr_scheduler.LambdaLR
    sched_D: torch.optim.lr_scheduler.LambdaLR
    pools: dict[str, ImagePool]
    data: _Data
    gan_loss: GANLoss
    amp: bool

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            return torch.autocast(device_type=self.ctx.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, step: int) -> torch.Tensor:
        """One junyanz ``optimize_parameters``; returns the :data:`LOSS_KEYS` terms (detached)."""
        cg = self.cfg.cyclegan
        n = self.nets
        lam, lam_idt = cg.lambda_cycle, cg.lambda_identity * cg.lambda_cycle
        real_A, real_B = self.data.batch(step)

        # ---- generators G_A (G) and G_B (F); discriminators frozen and called unwrapped
        _set_requires_grad([n.D_A, n.D_B], False)
        self.opt_G.zero_grad(set_to_none=True)
        with self.autocast():
            fake_B = n.G_A(real_A)  # G(x)
            rec_A = n.G_B(fake_B)  # F(G(x))
            fake_A = n.G_B(real_B)  # F(y)
            rec_B = n.G_A(fake_A)  # G(F(y))
            if lam_idt > 0:
                loss_idt = lam_idt * (
                    identity_loss(n.G_A(real_B).float(), real_B)
                    + identity_loss(n.G_B(real_A).float(), real_A)
                )
            else:
                loss_idt = real_A.new_zeros(())
            loss_g_gan = self.gan_loss(unwrap(n.D_A)(fake_B).float(), True) + self.gan_loss(
                unwrap(n.D_B)(fake_A).float(), True
            )
            loss_cycle = lam * (cycle_loss(rec_A.float(), real_A) + cycle_loss(rec_B.float(), real_B))
            loss_G = loss_g_gan + loss_cycle + loss_idt
        loss_G.backward()
        self.opt_G.step()

        # ---- discriminators D_A (D_Y) and D_B (D_X) on pooled fakes
        _set_requires_grad([n.D_A, n.D_B], True)
        self.opt_D.zero_grad(set_to_none=True)
        pooled_B = self.pools["fake_Y"].query(fake_B.detach().float())
        pooled_A = self.pools["fake_X"].query(fake_A.detach().float())
        with self.autocast():
            loss_d_a = 0.5 * (
                self.gan_loss(n.D_A(real_B).float(), True) + self.gan_loss(n.D_A(pooled_B).float(), False)
            )
            loss_d_b = 0.5 * (
                self.gan_loss(n.D_B(real_A).float(), True) + self.gan_loss(n.D_B(pooled_A).float(), False)
            )
            loss_D = loss_d_a + loss_d_b
        loss_D.backward()
        self.opt_D.step()
        self.sched_G.step()
        self.sched_D.step()
        return torch.stack([loss_cycle, loss_idt, loss_g_gan, loss_D, loss_G]).detach().float()

    # ---------------------------------------------------------------------------------- state
    def state(self, step: int, ranks: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "stage_key": cyclegan_stage_key(self.cfg),
            "step": step,
            "data_position": {"step": step},  # stateless sampling: the step is the whole position
            "generator_config": generator_config(self.cfg, step=step),
            "models": {
                name: {k: v.detach().cpu() for k, v in unwrap(net).state_dict().items()}
                for name, net in self.nets.items()
            },
            "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
            "schedulers": {"G": self.sched_G.state_dict(), "D": self.sched_D.state_dict()},
            "ranks": ranks,
        }

    def restore(self, state: dict[str, Any]) -> int:
        self.opt_G.load_state_dict(state["optimizers"]["G"])
        self.opt_D.load_state_dict(state["optimizers"]["D"])
        self.sched_G.load_state_dict(state["schedulers"]["G"])
        self.sched_D.load_state_dict(state["schedulers"]["D"])
        mine = state["ranks"][self.ctx.rank]
        for name, pool in self.pools.items():
            pool.load_state_dict(mine["pools"][name])
        restore_rng(mine["rng"])
        return int(state["step"])

    # ---------------------------------------------------------------------------- evaluation
    def evaluate(self, step: int) -> dict[str, float]:
        """Table 2 numbers for every "real" test set (rank 0 only), plus a comparison grid per set."""
        from csrgan.train.evaluation import evaluate_translation

        G = unwrap(self.nets.G_A)
        was_training = G.training
        G.eval()
        try:
            out = evaluate_translation(G, self.cfg.data.test_sets, self.cfg.data.scale, self.ctx.device)
            if self.cfg.eval.grid_images > 0:
                self._write_grids(G, step)
        finally:
            G.train(was_training)
        return out

    @torch.no_grad()
    def _write_grids(self, G: nn.Module, step: int) -> None:
        """``out_dir/grids/cyclegan_<set>_step<step>.png``: rows of bicubic x | G(x) | real y (LR scale)."""
        from csrgan.data.resize import imresize
        from csrgan.train.evaluation import comparison_grid, iter_test_images

        for ts in self.cfg.data.test_sets:
            if ts.degradation != "real" or ts.hr is None or ts.lr is None:
                continue
            rows = []
            for k, (_, real_lr, hr) in enumerate(iter_test_images(ts, self.cfg.data.scale)):
                if k >= self.cfg.eval.grid_images:
                    break
                assert hr is not None
                bic = imresize(hr, scale=1.0 / self.cfg.data.scale)
                g = to_uint8(G(to_tensor(bic).to(self.ctx.device)))[0]
                rows.append((bic, g, real_lr))
            if rows:
                path = Path(self.ctx.out_dir) / "grids" / f"{PHASE}_{ts.name}_step{step}.png"
                write_image(path, comparison_grid(rows, scale=1))


def _write_final(final_dir: Path, cfg: ExperimentConfig, G_A: nn.Module, full_state: dict[str, Any]) -> None:
    """``final/``: the full training state (``state.pt``, a checkpoint) + ``generator.pt`` / ``.json``."""
    step = int(full_state["step"])
    save_state(final_dir, full_state)
    save_generator(
        final_dir,
        G_A,
        generator_config(cfg, step=step, stage_key=cyclegan_stage_key(cfg), seed=cfg.cyclegan.seed),
    )


def _reduce_mean(values: torch.Tensor, ctx: TrainContext) -> torch.Tensor:
    """Mean over ranks (NaN/inf anywhere stays non-finite everywhere, so all ranks stop together)."""
    dist = _dist()
    if dist is not None and ctx.world_size > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ctx.world_size
    return values


def train_cyclegan(cfg: ExperimentConfig, ctx: TrainContext) -> dict[str, Any]:
    """Train (or resume) the CycleGAN stage; returns rank 0's last report (plus ``final_dir`` there).

    ``cfg`` must have absolute data paths (:func:`csrgan.data.layout.resolve_data`). Reports, on every
    rank at the same steps: every ``eval_every`` steps, every ``checkpoint_every`` steps and at the end.
    Rank 0 adds the Table-2 metrics (``"<set>/g_psnr"``, ``"<set>/g_ssim"``, ``"<set>/bicubic_psnr"``,
    ``"<set>/bicubic_ssim"`` for each ``degradation: real`` set with HR) at evaluation steps and a
    checkpoint at checkpoint steps. At the end rank 0 writes ``ctx.out_dir/final/`` (see
    :func:`save_generator`). A non-finite loss on any rank stops every rank after one report with
    ``diverged: 1`` (no checkpoint of the broken state is written).
    """
    from csrgan.metrics import PROTOCOL

    cg = cfg.cyclegan
    _check_context(cfg, ctx)
    memory_format = torch.channels_last if cfg.resources.channels_last else torch.contiguous_format
    data = _Data.build(cfg, ctx, memory_format)

    nets = _build_nets(cfg)
    _seed_globals(cfg.cyclegan.seed, ctx.rank)
    ckpt_path = ctx.latest_checkpoint()
    state = _load_checkpoint(ckpt_path, cfg, ctx) if ckpt_path is not None else None
    for name, net in nets.items():
        if state is not None:
            net.load_state_dict(state["models"][name])
        setattr(nets, name, ctx.prepare_model(net.to(memory_format=memory_format)))

    betas = (cg.beta1, 0.999)
    opt_G = torch.optim.Adam([*nets.G_A.parameters(), *nets.G_B.parameters()], lr=cg.lr, betas=betas)
    opt_D = torch.optim.Adam([*nets.D_A.parameters(), *nets.D_B.parameters()], lr=cg.lr, betas=betas)
    decay = LinearDecay.from_config(cg)
    pools = {
        name: ImagePool(
            cg.pool_size,
            generator=torch.Generator().manual_seed(_derive_seed(cfg.cyclegan.seed, stream, ctx.rank)),
        )
        for name, stream in (("fake_Y", _STREAM_POOL_Y), ("fake_X", _STREAM_POOL_X))
    }
    trainer = _Trainer(
        cfg=cfg,
        ctx=ctx,
        nets=nets,
        opt_G=opt_G,
        opt_D=opt_D,
        sched_G=torch.optim.lr_scheduler.LambdaLR(opt_G, decay),
        sched_D=torch.optim.lr_scheduler.LambdaLR(opt_D, LinearDecay(decay.iters, decay.decay_start)),
        pools=pools,
        data=data,
        gan_loss=GANLoss("lsgan"),
        amp=cfg.resources.amp,
    )
    step = 0
    if state is not None:
        step = trainer.restore(state)
        log.info("cyclegan: resumed from %s at step %d", ckpt_path, step)
        del state

    base = {"phase": PHASE, "protocol": PROTOCOL.id, "weights": WEIGHTS_PROVENANCE}
    window_sum = torch.zeros(len(LOSS_KEYS), dtype=torch.float64)
    window_n = 0
    last: dict[str, Any] = {}
    final_dir = Path(ctx.out_dir) / "final"
    for _, net in nets.items():
        net.train()

    while True:
        done = step >= cg.iters
        if not done:
            terms = _reduce_mean(trainer.train_step(step), ctx).cpu()
            step += 1
            if not bool(torch.isfinite(terms).all()):
                last = {
                    **base,
                    "step": step,
                    "epoch": data.x_sampler.epoch_at(step),
                    "diverged": 1,
                    **{k: float(v) for k, v in zip(LOSS_KEYS, terms.tolist(), strict=True)},
                }
                log.warning("cyclegan: non-finite loss at step %d (%s); stopping", step, last)
                ctx.report(last)
                return last
            window_sum += terms.double()
            window_n += 1
        final = step >= cg.iters
        due_eval = final or step % cg.eval_every == 0
        due_ckpt = not done and (final or step % cg.checkpoint_every == 0)  # `done`: resumed a finished run
        if not (due_eval or due_ckpt):
            continue
        metrics: dict[str, Any] = {
            **base,
            "step": step,
            "epoch": data.x_sampler.epoch_at(step),
            "diverged": 0,
            "lr": trainer.sched_G.get_last_lr()[0],
        }
        if window_n:
            metrics.update(zip(LOSS_KEYS, (window_sum / window_n).tolist(), strict=True))
        window_sum.zero_()
        window_n = 0
        if due_eval and ctx.rank == 0:
            metrics.update(trainer.evaluate(step))
        staging: Path | None = None
        if due_ckpt or final:
            ranks = _gather_rank_states(_rank_state(pools), ctx)  # collective: every rank
            if ctx.rank == 0:
                assert ranks is not None
                full = trainer.state(step, ranks)
                if due_ckpt:
                    staging = Path(tempfile.mkdtemp(prefix="csrgan-cyclegan-ckpt-"))
                    save_state(staging / step_dir_name(step), full)
                if final:
                    _write_final(final_dir, cfg, nets.G_A, full)
        try:
            ctx.report(metrics, None if staging is None else staging / step_dir_name(step))
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        last = metrics
        if final:
            break

    if ctx.rank == 0:
        last = {**last, "final_dir": str(final_dir)}
    return last
