"""Scoring by the protocol: trainers, the sweep's bicubic baseline, ``csrgan evaluate``.

Everything here follows the core protocol of :mod:`csrgan.metrics` (Y channel, crop ``scale`` px,
uint8 rounding): SR outputs are quantised with :func:`csrgan.data.io.to_uint8` *before* any metric,
exactly once, and metrics are means over the images of a set. Keys are ``"<set>/<metric>"``.

* :func:`evaluate_sr_model` — an SR network on full test images (tiled when ``tile > 0``), plus a
  labelled LR | bicubic | SR | HR comparison grid PNG per set (:mod:`csrgan.grids`).
* :func:`evaluate_bicubic` — the same numbers for MATLAB-bicubic upsampling (the baseline).
* :func:`evaluate_translation` — the CycleGAN's Table 2: how close ``G(bicubic(HR))`` and plain
  ``bicubic(HR)`` are to the *real* LR of the same scene.
* :func:`evaluate_folder` — per-image and mean metrics of any ``uint8 LR -> uint8 SR`` function on one
  folder (what ``csrgan evaluate`` prints), :func:`bicubic_upscaler` and :func:`evaluate_checkpoint`.
* :func:`build_lpips` — LPIPS per ``eval.lpips``, honouring ``optional``.

Large images run through :func:`csrgan.models.tiling.tiled_forward` (exact for convolutional nets).

Sets without HR (no-reference, e.g. RealSRSet) get no-reference metric keys only (``<set>/niqe``, see
:meth:`csrgan.config.TestSetConfig.noref_for` and :mod:`csrgan.noref`); their SR output still goes into
the comparison grid (without PSNR).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from csrgan.config import EvalConfig, LPIPSConfig, TestSetConfig
from csrgan.data.datasets import TestSet
from csrgan.data.io import to_tensor, to_uint8, write_image
from csrgan.data.resize import imresize
from csrgan.grids import SR_LABEL, SRImage, rotation, sr_grid
from csrgan.inference import model_upscaler
from csrgan.metrics import PROTOCOL, evaluate_image
from csrgan.models.tiling import ModelFn, tiled_forward
from csrgan.noref import NOREF_PROTOCOL, build_noref, cached_noref, score_noref
from csrgan.registry import METRICS

if TYPE_CHECKING:
    from csrgan.metrics import LPIPSMetric
    from csrgan.noref import NIQEMetric

__all__ = [
    "bicubic_upscaler",
    "build_lpips",
    "evaluate_bicubic",
    "evaluate_checkpoint",
    "evaluate_folder",
    "evaluate_sr_model",
    "evaluate_translation",
    "iter_test_images",
]

log = logging.getLogger(__name__)

#: ``uint8 (h, w, 3) LR -> uint8 (s*h, s*w, 3) SR``: bicubic, or a trained generator.
UpscaleFn = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------------ loading
def iter_test_images(ts: TestSetConfig, scale: int) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(image name, lr_uint8, hr_uint8 or None)`` for a configured test set, at most ``max_images``.

    Loading rules (modcrop of HR, LR from ``lr`` checked to be HR/scale, or MATLAB bicubic of HR)
    live in :class:`csrgan.data.datasets.TestSet`.
    """

    for name, lr, hr, _ in iter_test_images_gray(ts, scale):
        yield name, lr, hr


def iter_test_images_gray(
    ts: TestSetConfig, scale: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray | None, bool]]:
    """Like :func:`iter_test_images`, plus whether the HR file is single-channel (scored as grey)."""
    test_set = TestSet(ts.name, hr_dir=ts.hr, lr_dir=ts.lr, scale=scale)
    for k, (name, lr, hr) in enumerate(test_set):
        if ts.max_images is not None and k >= ts.max_images:
            break
        yield name, lr, hr, test_set.hr_is_gray(k)


# ----------------------------------------------------------------------------------------- SR eval
def _grid_picks(ts: TestSetConfig, scale: int, count: int, round_: int) -> dict[str, str]:
    """``{image name: "image k/n"}`` of the images the grid of evaluation ``round_`` shows, in row
    order (:func:`csrgan.grids.rotation` over the set's first ``max_images`` images)."""
    names = TestSet(ts.name, hr_dir=ts.hr, lr_dir=ts.lr, scale=scale).names[: ts.max_images]
    return {names[k]: f"image {k + 1}/{len(names)}" for k in rotation(len(names), count, round_)}


def _evaluate_upscaler(
    upscale: UpscaleFn,
    test_sets: Sequence[TestSetConfig],
    scale: int,
    metrics: Sequence[str],
    lpips: LPIPSMetric | None,
    grid_dir: Path | None,
    step: int,
    grid_images: int,
    *,
    grid_round: int = 0,
    caption: str = "",
    sr_label: str | None = SR_LABEL,
) -> dict[str, float]:
    for m in metrics:
        METRICS.get(m)  # unknown names: RegistryError listing the known ones
    # LPIPS asked for but unavailable (eval.lpips.optional and weights missing): build_lpips has already
    # said so loudly; the column stays empty rather than being filled by a different network.
    # No-reference names (NIQE) are scored per set below, on every image, HR or not.
    wanted = tuple(m for m in metrics if METRICS.get(m).reference and (m != "lpips" or lpips is not None))
    out: dict[str, float] = {}
    for ts in test_sets:
        sums: dict[str, float] = {}
        n_scored = 0
        noref = cached_noref(ts.noref_for(list(metrics)))  # MissingWeightsError says how to get the model
        noref_sums: dict[str, float] = {}
        n_noref = 0
        picks = _grid_picks(ts, scale, grid_images, grid_round) if grid_dir is not None else {}
        grid_rows: dict[str, SRImage] = {}
        for name, lr, hr, gray in iter_test_images_gray(ts, scale):
            sr = upscale(lr)
            if sr.dtype != np.uint8 or sr.shape != (lr.shape[0] * scale, lr.shape[1] * scale, 3):
                raise ValueError(
                    f"{ts.name}/{name}: upscaled image is {sr.dtype} {sr.shape}, expected uint8 "
                    f"{(lr.shape[0] * scale, lr.shape[1] * scale, 3)}"
                )
            if hr is not None and wanted:
                scores = evaluate_image(sr, hr, scale, metrics=wanted, lpips=lpips, gray=gray)
                for key, value in scores.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                n_scored += 1
            if noref:
                for key, value in score_noref(sr, scale, noref).items():
                    noref_sums[key] = noref_sums.get(key, 0.0) + value
                n_noref += 1
            if name in picks:
                grid_rows[name] = SRImage(name, lr, sr, hr, gray, picks[name])
        if n_scored:
            out.update({f"{ts.name}/{k}": v / n_scored for k, v in sums.items()})
        if n_noref:
            out.update({f"{ts.name}/{k}": v / n_noref for k, v in noref_sums.items()})
        if grid_dir is not None and grid_rows:
            head = f"{ts.name} | step {step}" + (f" | {caption}" if caption else "")
            grid = sr_grid([grid_rows[n] for n in picks if n in grid_rows], scale, head, sr_label)
            write_image(Path(grid_dir) / f"{ts.name}_step{step}.png", grid.image)
    return out


def evaluate_sr_model(
    model_fn: ModelFn,
    test_sets: Sequence[TestSetConfig],
    scale: int,
    metrics: Sequence[str],
    lpips: LPIPSMetric | None,
    device: torch.device | str,
    tile: int = 0,
    grid_dir: Path | None = None,
    step: int = 0,
    grid_images: int = 2,
    overlap: int | None = None,
    caption: str = "",
    grid_round: int = 0,
) -> dict[str, float]:
    """Mean metrics of an SR network over every set: ``{"<set>/psnr": ..., "<set>/ssim": ..., ...}``.

    ``model_fn`` maps a float ``(1, 3, h, w)`` tensor in [0, 1] on ``device`` to ``(1, 3, s*h, s*w)``; put
    an ``nn.Module`` in eval mode first (the caller owns train/eval state). Full images, one at a time;
    with ``tile > 0`` through :func:`tiled_forward` (``overlap`` LR px of context). ``lpips`` is an
    ``LPIPSMetric`` or None (then no ``lpips`` key). ``overlap`` defaults to the network's
    ``receptive_radius`` (16 for a function without one).

    With ``grid_dir``, writes ``grid_dir/<set>_step<step>.png`` (:func:`csrgan.grids.sr_grid`: LR |
    bicubic | SR | HR with per-image PSNR) of ``grid_images`` images chosen by
    :func:`csrgan.grids.rotation` for evaluation ``grid_round`` (a trainer passes
    :func:`csrgan.grids.eval_round`, so a run shows every test image); ``caption`` (e.g.
    :func:`csrgan.grids.run_caption`) follows the set name and step in the grid's caption.
    """
    device = torch.device(device)
    if overlap is None:
        overlap = int(getattr(model_fn, "receptive_radius", 16))

    @torch.no_grad()
    def upscale(lr: np.ndarray) -> np.ndarray:
        x = to_tensor(lr).to(device)
        return to_uint8(tiled_forward(model_fn, x, scale, tile, overlap))[0]

    return _evaluate_upscaler(
        upscale, test_sets, scale, metrics, lpips, grid_dir, step, grid_images,
        grid_round=grid_round, caption=caption,
    )  # fmt: skip


def evaluate_bicubic(
    test_sets: Sequence[TestSetConfig],
    scale: int,
    metrics: Sequence[str],
    lpips: LPIPSMetric | None = None,
    grid_dir: Path | None = None,
    step: int = 0,
    grid_images: int = 2,
) -> dict[str, float]:
    """:func:`evaluate_sr_model` for MATLAB-bicubic upsampling of the LR (uint8 in, uint8 out); its grid
    has no SR column (it would repeat the bicubic one)."""
    return _evaluate_upscaler(
        lambda lr: imresize(lr, scale=scale), test_sets, scale, metrics, lpips, grid_dir, step, grid_images,
        caption="bicubic baseline", sr_label=None,
    )  # fmt: skip


# --------------------------------------------------------------------------------- CycleGAN Table 2
def evaluate_translation(
    G_fn: ModelFn, test_sets: Sequence[TestSetConfig], scale: int, device: torch.device | str
) -> dict[str, float]:
    """How real-like the CycleGAN's ``G`` makes bicubic LR (the report's Table 2), per "real" set.

    For every set with ``degradation == "real"`` and both ``hr`` and ``lr``: ``x = bicubic(HR)`` (MATLAB,
    uint8) and the real LR ``y`` of the same scene. Keys ``<set>/g_psnr``, ``<set>/g_ssim`` compare
    ``G(x)`` (uint8-rounded) with ``y``; ``<set>/bicubic_psnr``, ``<set>/bicubic_ssim`` compare ``x``
    with ``y``, the baseline G must beat. Means over images. Other sets are skipped.

    Protocol: Y channel as in :mod:`csrgan.metrics`, but crop border **0**. The SR protocol's
    ``scale``-px crop removes HR-scale border artefacts of upsampling; here both images are at LR scale
    and G is size-preserving, so there is no upsampling border to exclude, and on small LR images a
    4-px crop would discard a large share of the pixels. ``G_fn`` maps ``(1, 3, h, w)`` on ``device``
    to the same shape (put an ``nn.Module`` in eval mode first).
    """
    from csrgan.metrics import psnr, ssim

    device = torch.device(device)
    out: dict[str, float] = {}
    for ts in test_sets:
        if ts.degradation != "real" or ts.hr is None or ts.lr is None:
            continue
        sums = {"g_psnr": 0.0, "g_ssim": 0.0, "bicubic_psnr": 0.0, "bicubic_ssim": 0.0}
        n = 0
        for name, real_lr, hr in iter_test_images(ts, scale):
            assert hr is not None
            bic = imresize(hr, scale=1.0 / scale)
            if bic.shape != real_lr.shape:
                raise ValueError(
                    f"{ts.name}/{name}: bicubic LR {bic.shape[:2]} and real LR {real_lr.shape[:2]} "
                    "differ in size"
                )
            with torch.no_grad():
                g = to_uint8(G_fn(to_tensor(bic).to(device)))[0]
            if g.shape != real_lr.shape:
                raise ValueError(f"{ts.name}/{name}: G changed the LR size {bic.shape[:2]} -> {g.shape[:2]}")
            sums["g_psnr"] += psnr(g, real_lr, crop_border=0)
            sums["g_ssim"] += ssim(g, real_lr, crop_border=0)
            sums["bicubic_psnr"] += psnr(bic, real_lr, crop_border=0)
            sums["bicubic_ssim"] += ssim(bic, real_lr, crop_border=0)
            n += 1
        if n:
            out.update({f"{ts.name}/{k}": v / n for k, v in sums.items()})
    return out


# ------------------------------------------------------------------------------------------- LPIPS
def build_lpips(eval_cfg: EvalConfig, device: torch.device | str = "cpu") -> LPIPSMetric | None:
    """The ``LPIPSMetric`` that ``eval`` asks for, or None when LPIPS is not among ``eval.metrics``.

    Missing backbone weights: with ``eval.lpips.optional: true`` -> None and ONE loud warning (log +
    stderr), so the LPIPS column is empty rather than silently computed with another network; with
    ``optional: false`` the ``MissingWeightsError`` (which says how to fix it) propagates.
    """
    if "lpips" not in eval_cfg.metrics:
        return None
    from csrgan.metrics import LPIPSMetric
    from csrgan.weights import MissingWeightsError

    cfg = eval_cfg.lpips
    if cfg.net != PROTOCOL.lpips_net:
        raise ValueError(
            f"eval.lpips.net: {cfg.net!r} is not the protocol's LPIPS network ({PROTOCOL.lpips_net!r})"
        )
    try:
        return LPIPSMetric(device=str(device), source=cfg.source, random_backbone=cfg.random_backbone)
    except MissingWeightsError as exc:
        if not cfg.optional:
            raise
        from csrgan.weights import lpips_disabled_message, warn_once

        # Once per process (each trainer of a run calls this), naming --lpips-optional in csrgan evaluate.
        warn_once(lpips_disabled_message(exc), log)
        return None


# ----------------------------------------------------------------------------------- one folder
def bicubic_upscaler(scale: int) -> UpscaleFn:
    """MATLAB-compatible bicubic upsampling (a = -0.5), rounded to uint8: the baseline every paper reports."""

    def up(lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        return imresize(lr, output_shape=(h * scale, w * scale))

    return up


def evaluate_folder(
    test_set: TestSet,
    upscale: UpscaleFn,
    metrics: Sequence[str] = ("psnr", "ssim"),
    lpips: LPIPSMetric | None = None,
    progress: Callable[[str], None] | None = None,
    noref: Mapping[str, NIQEMetric] | None = None,
) -> dict[str, Any]:
    """``{"mean": {metric: value}, "images": [{"name":..., metric: value}], "n": N, "protocol"}``.

    LPIPS is skipped (None) when requested but ``lpips`` is None (optional LPIPS with missing weights).
    No-reference metrics among ``metrics`` (NIQE) are scored by the ``noref`` scorers
    (:func:`csrgan.noref.build_noref`) on the SR alone, so a set without HR can be scored with them
    only; the result then also has ``"noref_protocol"`` and ``"noref_models"`` (name -> provenance).
    """
    noref = dict(noref or {})
    no_ref = [m for m in metrics if not METRICS.get(m).reference]
    if missing := [m for m in no_ref if m not in noref]:
        raise ValueError(f"no-reference metric(s) {missing} requested but no scorer given (noref=...)")
    full_ref = [m for m in metrics if m not in no_ref]
    if full_ref and not test_set.has_hr:
        raise ValueError(
            f"test set {test_set.name!r} has no HR images: {full_ref} compare with the HR; score it with "
            f"no-reference metrics only (e.g. niqe)"
        )
    wanted = [m for m in full_ref if m != "lpips" or lpips is not None]
    scorers = {m: noref[m] for m in no_ref}
    images: list[dict[str, Any]] = []
    for i, (name, lr, hr) in enumerate(test_set):
        sr = upscale(lr)
        row: dict[str, Any] = {"name": name}
        if hr is not None:
            if sr.shape != hr.shape:
                raise ValueError(f"{name}: SR is {sr.shape} but HR is {hr.shape} (scale {test_set.scale})")
            row.update(evaluate_image(sr, hr, test_set.scale, wanted, lpips, gray=test_set.hr_is_gray(i)))
        row.update(score_noref(sr, test_set.scale, scorers))
        for m in metrics:
            row.setdefault(m, None)
        images.append(row)
        if progress:
            progress(name)
    mean = {m: (float(np.mean([r[m] for r in images])) if _all_present(images, m) else None) for m in metrics}
    out = {"mean": mean, "images": images, "n": len(images), "protocol": PROTOCOL.id}
    if scorers:
        out["noref_protocol"] = NOREF_PROTOCOL
        out["noref_models"] = {m: s.provenance for m, s in scorers.items()}
    return out


def _all_present(rows: list[dict[str, Any]], metric: str) -> bool:
    return bool(rows) and all(r.get(metric) is not None for r in rows)


def evaluate_checkpoint(
    checkpoint: str | Path,
    hr_dir: str | Path | None,
    lr_dir: str | Path | None = None,
    scale: int | None = None,
    metrics: Sequence[str] = ("psnr", "ssim"),
    lpips_cfg: LPIPSConfig | None = None,
    device: str | torch.device = "cpu",
    tile: int = 0,
) -> dict[str, Any]:
    """PSNR/SSIM/LPIPS of the generator in ``checkpoint`` on ``hr_dir`` (LR from ``lr_dir`` or bicubic);
    with ``hr_dir=None``, no-reference metrics (``metrics=("niqe",)``) of the SR of ``lr_dir``.

    Returns :func:`evaluate_folder`'s ``{"mean": {...}, "images": [...], "n", "protocol"}``
    plus ``"scale"``, ``"checkpoint"`` and ``"lpips_weights"`` (the LPIPS backbone's provenance).
    ``lpips_cfg`` is a :class:`csrgan.config.LPIPSConfig` (default: AlexNet weights from the cache,
    not optional).
    """
    up = model_upscaler(checkpoint, device=device, tile=tile, scale=scale)
    s = up.scale
    lpips = build_lpips(EvalConfig(metrics=list(metrics), lpips=lpips_cfg or LPIPSConfig()), device=device)
    noref = build_noref([m for m in metrics if not METRICS.get(m).reference])
    result = evaluate_folder(TestSet("checkpoint", hr_dir, lr_dir, scale=s), up, metrics, lpips, noref=noref)
    return {
        **result,
        "scale": s,
        "checkpoint": str(checkpoint),
        "lpips_weights": getattr(lpips, "provenance", None),
    }
