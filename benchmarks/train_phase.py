"""End-to-end throughput of one SR training phase: csrgan's ``train_sr`` against a bare PyTorch loop.

``benchmarks/train_step.py`` times the optimisation step alone; this times everything a phase does
between its start and its artefact, in the SAME process, alternating runs:

* **ours** — :func:`csrgan.train.srgan.train_sr` with a :class:`~csrgan.train.context.LocalContext`
  (construction, the deterministic sampler with its prefetch thread on, as ``resources.prefetch:
  true``, the steps, evaluations, reports, checkpoints, ``final/``);
* **ours-sync** — the same with the prefetch off (every batch read in the step's thread; the default
  ``resources.prefetch: false``), so the effect of the prefetch is measured in the same run;
* **bare-w<N>** — the same generator (and discriminator), losses and Adam, written inline, fed by a
  standard ``torch.utils.data.DataLoader`` (``num_workers=N``, shuffle) over a plain ``Dataset`` doing
  the same work per sample: aligned random crop of the HR and of its MATLAB-bicubic LR (csrgan's
  ``imresize`` of each whole image, once, as ``PairedPatchDataset(cache=True)`` does), the 8 flips,
  and with ``--lr-source pipeline`` csrgan's default degradation pipeline on the HR patch
  (``degrade_exact``, as ``PipelineLR``); evaluation with :func:`csrgan.evaluation.evaluate_sr_model`
  on the same test sets at the same cadence (grids included), a checkpoint (``torch.save`` of the
  nets and optimisers) at the same cadence.

Sizes are ``experiments/quickstart.yaml``'s (SRResNet 32 ch x 4 blocks, batch 8, 64-px HR patches; D
16 ch), on the demo set (built if missing) or an HR folder given with ``--data`` (its first
``--test-images`` images are then also the test set, LR = bicubic). Throughput is images (``iters *
batch``) over the run's wall time. For ours the time is split into data (seconds blocked in
``IterationSampler.read``: the sampler's ``pop_wait_s``, measured here by a subclass because the SR
loop drains ``pop_wait_s`` itself for ``time/data_s``), step (``train_step`` minus data), eval
(``evaluate``) and other (construction, per-step loss sync, reports, checkpoints, ``final/``); the
bare runs the same way (data: blocked in the loader's ``next``). When the SR loop's reports carry
``time/data_s`` / ``time/eval_s``, their totals are printed next to the measured ones. "CPU s" is
the CPU time of the process (all threads) and of the DataLoader's workers: the work done, which other
jobs on a shared machine disturb less than the wall time.

    python benchmarks/train_phase.py                              # bicubic, ~3 min on 2 idle cores
    python benchmarks/train_phase.py --lr-source bicubic,pipeline --repeats 3 --json out.json
    python benchmarks/train_phase.py --phase gan --workers 0,2,4

``--overlap-step-ms T`` runs only a check of the overlap itself: the phase's dataset read through the
sampler with a sleep of ``T`` ms as the step (no CPU, no GIL: what the training thread does while a GPU
computes), prefetch off and on; it prints the data wait and the wall time per step.

Exits 1 when the median ratio of the shipped default (ours-sync while ``resources.prefetch`` defaults
to false) over any bare variant is below ``--min-ratio`` (0.9).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from csrgan.config import (  # noqa: E402
    ExperimentConfig,
    ResourcesConfig,
    TestSetConfig,
    load_raw,
    validate_config,
)
from csrgan.data.degradations import DegradationPipeline, default_pipeline, degrade_exact  # noqa: E402
from csrgan.data.demo import build_demo  # noqa: E402
from csrgan.data.io import list_images, read_image  # noqa: E402
from csrgan.data.layout import resolve_data  # noqa: E402
from csrgan.data.resize import imresize, modcrop  # noqa: E402
from csrgan.evaluation import build_lpips, evaluate_sr_model  # noqa: E402
from csrgan.grids import eval_round  # noqa: E402
from csrgan.registry import SR_DISCRIMINATORS, SR_GENERATORS  # noqa: E402
from csrgan.train import srgan  # noqa: E402
from csrgan.train.context import LocalContext  # noqa: E402
from csrgan.train.sampling import IterationSampler  # noqa: E402

QUICKSTART = REPO / "experiments" / "quickstart.yaml"


@dataclass
class Run:
    """One timed phase. Seconds are totals over the run."""

    variant: str
    lr_source: str
    repeat: int
    images: int
    wall_s: float
    data_s: float
    step_s: float
    eval_s: float
    cpu_s: float = 0.0
    reported: dict[str, float] = field(default_factory=dict)

    @property
    def img_s(self) -> float:
        return self.images / self.wall_s

    @property
    def other_s(self) -> float:
        return self.wall_s - self.data_s - self.step_s - self.eval_s


def _cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (the DataLoader's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# ------------------------------------------------------------------------------------------ config
@functools.cache
def _demo(root: str) -> str:
    """The demo set at ``root``, built (or checked) once per process."""
    build_demo(root)
    return root


def build_config(args: argparse.Namespace, lr_source: str, iters: int, eval_every: int) -> ExperimentConfig:
    """quickstart.yaml's sizes; one phase of ``iters`` steps; the LR source; a small test set."""
    raw = load_raw(QUICKSTART)
    raw.pop("search", None)
    raw["storage"] = str(Path(tempfile.gettempdir()) / "csrgan-bench-storage")
    sr = raw["sr"]
    sr["mix_prob"] = 1.0 if lr_source == "pipeline" else 0.0
    if lr_source == "pipeline":
        sr["lr_source"] = "pipeline"
    sr[args.phase]["iters"] = iters
    sr["eval_every"] = eval_every
    sr["checkpoint_every"] = args.checkpoint_every or iters
    raw["eval"]["metrics"] = args.metrics.split(",")
    raw["resources"] = {"workers": 1, "cpus_per_worker": 1, "amp": False, "channels_last": False}
    raw["resources"]["threads_per_worker"] = args.threads
    if args.data is not None:
        hr = str(Path(args.data).resolve())
        raw["data"] = {"train_hr": hr, "scale": 4, "test_sets": [{"name": "data", "hr": hr}]}
    else:
        raw["data"]["demo"]["dir"] = _demo(str(Path(args.demo_dir).resolve()))
    cfg = resolve_data(validate_config(raw, source=str(QUICKSTART)), base=REPO, build_demo=False)
    sets = [TestSetConfig(**{**t.model_dump(), "max_images": args.test_images}) for t in cfg.data.test_sets]
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"test_sets": sets})})


# -------------------------------------------------------------------------------------------- ours
class _Timers:
    def __init__(self) -> None:
        self.data = self.step = self.eval = 0.0
        self.samplers: list[IterationSampler] = []


@contextlib.contextmanager
def _instrumented(prefetch: bool) -> Iterator[_Timers]:
    """SRLoop with a timing sampler (prefetch on/off) and timed ``train_step``/``evaluate``."""
    timers = _Timers()

    class TimedSampler(IterationSampler):
        def read(self, dataset: Any, step: int) -> dict[str, torch.Tensor]:
            t0 = time.perf_counter()
            try:
                return super().read(dataset, step)
            finally:
                timers.data += time.perf_counter() - t0

    def make_sampler(*args: Any, **kwargs: Any) -> IterationSampler:
        sampler = TimedSampler(*args, **{**kwargs, "prefetch": prefetch})
        timers.samplers.append(sampler)
        return sampler

    def timed(method: Callable[..., Any], slot: str) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(self, *args)
            finally:
                setattr(timers, slot, getattr(timers, slot) + time.perf_counter() - t0)

        return wrapper

    saved = (srgan.IterationSampler, srgan.SRLoop.train_step, srgan.SRLoop.evaluate)
    srgan.IterationSampler = make_sampler  # type: ignore[assignment, misc]
    srgan.SRLoop.train_step = timed(saved[1], "step")  # type: ignore[method-assign]
    srgan.SRLoop.evaluate = timed(saved[2], "eval")  # type: ignore[method-assign]
    try:
        yield timers
    finally:
        srgan.IterationSampler, srgan.SRLoop.train_step, srgan.SRLoop.evaluate = saved  # type: ignore[misc]
        for sampler in timers.samplers:
            sampler.close()


def _reported(reports: list[dict[str, Any]]) -> dict[str, float]:
    """Totals of the SR loop's own ``time/data_s`` (per step, per window) and ``time/eval_s``, if any."""
    out: dict[str, float] = {}
    prev = 0
    for r in reports:
        step = int(r.get("step", prev))
        if "time/data_s" in r:
            out["data_s"] = out.get("data_s", 0.0) + float(r["time/data_s"]) * (step - prev)
        if "time/eval_s" in r:
            out["eval_s"] = out.get("eval_s", 0.0) + float(r["time/eval_s"])
        prev = step
    return out


def run_ours(cfg: ExperimentConfig, phase: str, prefetch: bool, repeat: int, lr_source: str) -> Run:
    out = Path(tempfile.mkdtemp(prefix="csrgan-bench-ours-"))
    try:
        with _instrumented(prefetch) as t:
            ctx = LocalContext(out, device="cpu", threads=cfg.resources.threads_per_worker)
            t0, c0 = time.perf_counter(), _cpu_s()
            srgan.train_sr(cfg, ctx, phase)  # type: ignore[arg-type]
            wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        iters = cfg.sr.pretrain.iters if phase == "pretrain" else cfg.sr.gan.iters
        return Run(
            "ours" if prefetch else "ours-sync", lr_source, repeat, iters * cfg.sr.batch_size, wall,
            t.data, t.step - t.data, t.eval, cpu, _reported(ctx.reports),
        )  # fmt: skip
    finally:
        shutil.rmtree(out, ignore_errors=True)


# -------------------------------------------------------------------------------------------- bare
class BarePatches(Dataset):
    """Random aligned HR/LR crops + flips of whole images with MATLAB-bicubic LR (made once per image);
    with ``pipeline``, the LR patch is that degradation of the HR patch instead."""

    def __init__(
        self, hr_dir: str, scale: int, patch: int, length: int, pipeline: DegradationPipeline | None
    ):
        self.hr = [modcrop(read_image(p), scale) for p in list_images(hr_dir)]
        self.lr = [imresize(h, output_shape=(h.shape[0] // scale, h.shape[1] // scale)) for h in self.hr]
        self.scale, self.lp, self.length, self.pipeline = scale, patch // scale, length, pipeline
        self.rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rng is None:  # one stream per worker (DataLoader seeds torch per worker)
            self.rng = np.random.default_rng(torch.initial_seed())
        rng, k, s, lp = self.rng, i % len(self.hr), self.scale, self.lp
        lr, hr = self.lr[k], self.hr[k]
        top, left = int(rng.integers(0, lr.shape[0] - lp + 1)), int(rng.integers(0, lr.shape[1] - lp + 1))
        lr_p, hr_p = (
            lr[top : top + lp, left : left + lp],
            hr[top * s : (top + lp) * s, left * s : (left + lp) * s],
        )
        if self.pipeline is not None:
            lr_p = degrade_exact(self.pipeline, np.ascontiguousarray(hr_p), s, rng)[0]
        if rng.random() < 0.5:
            lr_p, hr_p = lr_p[:, ::-1], hr_p[:, ::-1]
        if rng.random() < 0.5:
            lr_p, hr_p = lr_p[::-1], hr_p[::-1]
        if rng.random() < 0.5:
            lr_p, hr_p = lr_p.transpose(1, 0, 2), hr_p.transpose(1, 0, 2)
        return tuple(  # type: ignore[return-value]
            torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div_(255.0)
            for a in (lr_p, hr_p)
        )


def _bare_step(
    cfg: ExperimentConfig, phase: str
) -> tuple[torch.nn.Module, dict[str, Any], Callable[..., Any]]:
    """(G, state to checkpoint, step(lr, hr) -> float loss): the phase's algorithm written inline."""
    sr, g = cfg.sr, cfg.sr.gan
    torch.manual_seed(cfg.seed)
    G = SR_GENERATORS.build(sr.generator.type, **sr.generator.kwargs(), in_ch=3, scale=cfg.data.scale)
    if phase == "pretrain":
        opt = torch.optim.Adam(G.parameters(), lr=sr.pretrain.lr, betas=(0.9, 0.999))

        def pretrain(lr: torch.Tensor, hr: torch.Tensor) -> float:
            loss = F.mse_loss(G(lr), hr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.item()

        return G, {"G": G, "opt": opt}, pretrain
    d = sr.discriminator
    D = SR_DISCRIMINATORS.build(d.type, **d.kwargs(), in_ch=3, patch_size=sr.patch_size)
    opt_g = torch.optim.Adam(G.parameters(), lr=g.lr, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=g.lr, betas=(0.9, 0.999))

    def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))

    def gan(lr: torch.Tensor, hr: torch.Tensor) -> float:
        D.requires_grad_(False)
        out = G(lr)
        total = g.content.weight * F.mse_loss(out, hr) + g.adv_weight * bce(D(out), True)
        if g.pixel_weight > 0:
            total = total + g.pixel_weight * F.mse_loss(out, hr)
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        D.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        bce(D(hr), True).backward()
        bce(D(out.detach()), False).backward()
        opt_d.step()
        return total.item()

    return G, {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d}, gan


def _bare_eval(cfg: ExperimentConfig, G: torch.nn.Module, lpips: Any, grid_dir: Path, step: int) -> None:
    G.eval()
    with torch.no_grad():
        evaluate_sr_model(
            G, cfg.data.test_sets, cfg.data.scale, cfg.eval.metrics, lpips, "cpu", tile=cfg.eval.tile,
            grid_dir=grid_dir, step=step, grid_images=cfg.eval.grid_images,
            grid_round=eval_round(step, cfg.sr.eval_every),
        )  # fmt: skip
    G.train()


def run_bare(cfg: ExperimentConfig, phase: str, workers: int, repeat: int, lr_source: str) -> Run:
    out = Path(tempfile.mkdtemp(prefix="csrgan-bench-bare-"))
    sr, iters = cfg.sr, (cfg.sr.pretrain.iters if phase == "pretrain" else cfg.sr.gan.iters)
    data_s = step_s = eval_s = 0.0
    try:
        t0, c0 = time.perf_counter(), _cpu_s()
        G, state, step_fn = _bare_step(cfg, phase)
        lpips = build_lpips(cfg.eval, "cpu") if "lpips" in cfg.eval.metrics else None
        pipeline = default_pipeline() if lr_source == "pipeline" else None
        assert cfg.data.train_hr is not None
        ds = BarePatches(cfg.data.train_hr, cfg.data.scale, sr.patch_size, iters * sr.batch_size, pipeline)
        loader = DataLoader(
            ds, batch_size=sr.batch_size, shuffle=True, num_workers=workers, drop_last=True,
            generator=torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip
        batches = iter(loader)
        for step in range(1, iters + 1):
            t1 = time.perf_counter()
            lr, hr = next(batches)
            t2 = time.perf_counter()
            step_fn(lr, hr)
            t3 = time.perf_counter()
            data_s, step_s = data_s + t2 - t1, step_s + t3 - t2
            if step % sr.eval_every == 0 or step == iters:
                _bare_eval(cfg, G, lpips, out / "grids", step)
                eval_s += time.perf_counter() - t3
            if step % sr.checkpoint_every == 0 or step == iters:
                torch.save({k: v.state_dict() for k, v in state.items()}, out / f"step_{step}.pt")
        del batches, loader  # joins (and reaps) the workers: their CPU time is counted
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        return Run(
            f"bare-w{workers}", lr_source, repeat, iters * sr.batch_size, wall, data_s, step_s, eval_s, cpu
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------------------------------ overlap
def overlap_check(args: argparse.Namespace, step_ms: float, steps: int = 40) -> list[dict[str, Any]]:
    """Data wait per step when the step takes no CPU and no GIL (a sleep: what a training thread does
    while it waits for a GPU), prefetch off and on, on the SR phase's own dataset."""
    from csrgan.data.datasets import PairedPatchDataset

    out = []
    for src in args.lr_source.split(","):
        cfg = build_config(args, src, steps, steps)
        assert cfg.data.train_hr is not None
        ds = PairedPatchDataset(
            cfg.data.train_hr, scale=cfg.data.scale, patch_size=cfg.sr.patch_size, cache=True, seed=cfg.seed,
            alt=srgan.lr_source(cfg, None), mix_prob=cfg.sr.mix_prob,
        )  # fmt: skip
        for prefetch in (False, True):
            sampler = IterationSampler(len(ds), cfg.sr.batch_size, cfg.seed, prefetch=prefetch)
            sampler.read(ds, 0)  # decodes and caches the images
            sampler.pop_wait_s()
            t0 = time.perf_counter()
            for step in range(1, steps + 1):
                sampler.read(ds, step)
                time.sleep(step_ms / 1000)
            per_step = (time.perf_counter() - t0) / steps
            wait = sampler.pop_wait_s() / steps
            sampler.close()
            out.append({"lr_source": src, "prefetch": prefetch, "step_ms": step_ms, "wait_ms": wait * 1000,
                        "wall_ms": per_step * 1000})  # fmt: skip
            print(f"{src:9s} prefetch {'on ' if prefetch else 'off'}  step {step_ms:.0f} ms: data wait "
                  f"{wait * 1000:6.2f} ms/step, wall {per_step * 1000:6.1f} ms/step")  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------- report
def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    med = fmt.format(statistics.median(values))
    return med if len(values) == 1 else f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def summarise(runs: list[Run], variants: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per (lr source, variant): medians; per (lr source, pair): ratios of runs of the same repeat."""
    rows, ratios = [], []
    for src in dict.fromkeys(r.lr_source for r in runs):
        by = {v: [r for r in runs if r.lr_source == src and r.variant == v] for v in variants}
        for v, rs in by.items():
            rows.append({
                "lr_source": src, "variant": v, "img_s": [r.img_s for r in rs],
                **{k: statistics.median(getattr(r, k) for r in rs)
                   for k in ("wall_s", "data_s", "step_s", "eval_s", "other_s", "cpu_s")},
                "reported": rs[-1].reported,
            })  # fmt: skip
        bares = [v for v in variants if v.startswith("bare")]
        pairs = [("ours", b) for b in variants if b != "ours"] + [
            ("ours-sync", b) for b in bares if "ours-sync" in by
        ]
        for a, b in pairs:
            per_repeat = [x.img_s / y.img_s for x, y in zip(by[a], by[b], strict=True)]
            ratios.append({"lr_source": src, "pair": f"{a}/{b}", "ratios": per_repeat})
    return rows, ratios


def print_table(rows: list[dict[str, Any]], ratios: list[dict[str, Any]], header: str) -> None:
    print(header)
    print(f"{'lr source':9s}  {'run':9s}  {'img/s median (min-max)':24s} {'wall s':>7s} {'data s':>7s} "
          f"{'step s':>7s} {'eval s':>7s} {'other s':>7s} {'CPU s':>7s}")  # fmt: skip
    for r in rows:
        print(f"{r['lr_source']:9s}  {r['variant']:9s}  {_spread(r['img_s']):24s} {r['wall_s']:7.2f} "
              f"{r['data_s']:7.2f} {r['step_s']:7.2f} {r['eval_s']:7.2f} {r['other_s']:7.2f} "
              f"{r['cpu_s']:7.2f}")  # fmt: skip
    for q in ratios:
        print(f"{q['lr_source']:9s}  ratio {q['pair']:19s} {_spread(q['ratios'], '{:.3f}')}")
    for r in rows:
        if r["reported"]:
            said = ", ".join(f"{k} {v:.2f}" for k, v in r["reported"].items())
            print(f"{r['lr_source']:9s}  {r['variant']}: the SR loop's own reports total {said}")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", choices=["pretrain", "gan"], default="pretrain")
    p.add_argument("--lr-source", default="bicubic", help="comma-separated: bicubic, pipeline")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=30)
    p.add_argument("--checkpoint-every", type=int, default=0, help="0: only at the last step")
    p.add_argument("--test-images", type=int, default=2, help="images per test set")
    p.add_argument("--metrics", default="psnr,ssim")
    p.add_argument("--workers", default="0,2", help="comma-separated DataLoader num_workers of the bare runs")
    p.add_argument("--no-sync", action="store_true", help="skip the ours-sync (prefetch off) runs")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch threads; 1 = what quickstart's trials get (resources.cpus_per_worker: 1)",
    )  # fmt: skip
    p.add_argument("--data", default=None, help="an HR image folder instead of the demo set")
    p.add_argument("--demo-dir", default=str(REPO / ".demo-data"))
    p.add_argument("--min-ratio", type=float, default=0.9)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--overlap-step-ms", type=float, default=None,
        help="only the overlap check: reads with a sleep of this many ms as the step (a GPU-like step)",
    )  # fmt: skip
    return p.parse_args()


def _measure(args: argparse.Namespace, variants: list[str]) -> list[Run]:
    """Warm-up (untimed: imports, kernel set-up, first-use caches), then ``repeats`` rounds of every
    variant per LR source, the order rotated each round so none always runs first."""
    runners: dict[str, Callable[[ExperimentConfig, int, str], Run]] = {
        "ours": lambda c, k, s: run_ours(c, args.phase, True, k, s),
        "ours-sync": lambda c, k, s: run_ours(c, args.phase, False, k, s),
    }
    for v in variants:
        if v.startswith("bare-w"):
            runners[v] = lambda c, k, s, w=int(v[len("bare-w") :]): run_bare(c, args.phase, w, k, s)
    sources = args.lr_source.split(",")
    warm = build_config(args, sources[0], 2, 2)
    for v in variants:
        runners[v](warm, -1, sources[0])
    runs = []
    for k in range(args.repeats):
        for src in sources:
            cfg = build_config(args, src, args.iters, args.eval_every)
            for v in variants[k % len(variants) :] + variants[: k % len(variants)]:
                runs.append(r := runners[v](cfg, k, src))
                print(f"  repeat {k} {src:8s} {v:9s} {r.img_s:7.2f} img/s ({r.wall_s:.1f} s)", flush=True)
    return runs


def main() -> int:
    args = _args()
    torch.set_num_threads(args.threads)
    if args.overlap_step_ms is not None:
        rows = overlap_check(args, args.overlap_step_ms)
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "overlap": rows}, indent=1))
        return 0
    bares = [f"bare-w{int(w)}" for w in args.workers.split(",")]
    variants = ["ours", *([] if args.no_sync else ["ours-sync"]), *bares]
    load0 = os.getloadavg()[0]
    runs = _measure(args, variants)
    rows, ratios = summarise(runs, variants)
    cfg = build_config(args, "bicubic", args.iters, args.eval_every)
    print_table(rows, ratios, (
        f"\nphase {args.phase}: {args.iters} iters x batch {cfg.sr.batch_size} ({cfg.sr.patch_size}-px HR), "
        f"eval every {args.eval_every} on {args.test_images} image(s)/set, {args.threads} threads, "
        f"{args.repeats} repeats; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}, "
        f"torch {torch.__version__}"
    ))  # fmt: skip
    if args.json:
        runs_out = [{**asdict(r), "img_s": r.img_s, "other_s": r.other_s} for r in runs]
        doc = {"args": vars(args), "runs": runs_out, "rows": rows, "ratios": ratios}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    shipped = (
        "ours" if ResourcesConfig().prefetch or args.no_sync else "ours-sync"
    )  # resources.prefetch default
    failed = False
    for q in ratios:
        med = statistics.median(q["ratios"])
        if q["pair"].startswith(f"{shipped}/bare") and med < args.min_ratio:
            print(f"FAIL: {q['lr_source']} {q['pair']} median {med:.3f} < --min-ratio {args.min_ratio}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
