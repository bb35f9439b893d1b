"""Side-by-side crops for ``csrgan results report``: bicubic | each arm's final model | HR, per test image.

An *arm* is one row of the ablation table (one configuration). Its representative is one trial: among
its trials that did not diverge, the one whose final PSNR on the pick set is the median (the lower
middle one for an even count, ties broken by seed), so the crops show a typical seed, not the luckiest.
Its final generator (the row's ``checkpoint``) is loaded with :func:`csrgan.inference.model_upscaler`
and run on every test image, loaded exactly as the evaluation loads them
(:func:`csrgan.evaluation.iter_test_images_gray`); bicubic is :func:`csrgan.evaluation.bicubic_upscaler`
(MATLAB-compatible, :mod:`csrgan.data.resize`). PSNR is :func:`csrgan.metrics.evaluate_image`, the
table's protocol (Y channel, uint8, ``scale`` px border crop) — on the whole image and on the crop. The
mean over a set's images of the whole-image PSNR is therefore the number in that trial's row.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from csrgan.results.effects import find_row
from csrgan.results.report_data import Sweep, arm_label
from csrgan.results.schema import EXCLUDED_STATUSES, PARAM_PREFIX

__all__ = [
    "MAX_ARMS",
    "Arm",
    "Cell",
    "ImageCrops",
    "SetCrops",
    "crop_box",
    "crop_sets",
    "limit_arms",
    "pick_arms",
    "png_bytes",
]

BICUBIC, HR = "bicubic", "HR"
#: HR px per side of a crop (clipped to the image)
DEFAULT_CROP = 96
#: Crops for at most this many configurations (an Optuna sweep has one per trial): the reference and
#: the oracle, then the best by their representative's PSNR.
MAX_ARMS = 8


@dataclass(frozen=True)
class Arm:
    """One configuration of the table and the trial that represents it (None: no usable trial)."""

    label: str
    role: str  # "reference", "oracle" or ""
    trial_id: str | None
    seed: int | None
    value: float | None  # the representative's final PSNR on the pick set
    values: tuple[float, ...]  # every usable trial's, sorted
    checkpoint: Path | None
    why: str  # how it was picked, or why it has no crops


def _per_trial(sweep: Sweep, by: Sequence[str], phase: str, pick_set: str) -> pd.DataFrame:
    """One row per trial: status, seed, the ``by`` columns, final PSNR on ``pick_set`` and checkpoint."""
    df = sweep.df
    rows = df[(df["phase"] == phase) & (df["test_set"] == pick_set)]
    last = rows.loc[rows.groupby("trial_id")["step"].idxmax()] if len(rows) else rows
    cols = ["trial_id", "status", "seed", *by, "psnr", "checkpoint", "step"]
    return last[cols].reset_index(drop=True)


def pick_arms(sweep: Sweep, phase: str, pick_set: str) -> list[Arm]:
    """Per configuration (the table's rows, in its order) the median-PSNR trial of ``phase``."""
    s = sweep.search
    by = [PARAM_PREFIX + b for b in s.by if PARAM_PREFIX + b in sweep.df.columns]
    trials = _per_trial(sweep, by, phase, pick_set)
    if not by:
        return [_representative("all", "", trials, pick_set, sweep)]
    keys = trials[by].drop_duplicates().sort_values(by, na_position="last").reset_index(drop=True)
    arms = []
    for i, key in keys.iterrows():
        one = keys.iloc[[i]].reset_index(drop=True)
        role = " / ".join(
            r
            for r, where in (("reference", s.reference), ("oracle", s.oracle))
            if where and find_row(one, where) == 0
        )
        match = (trials[by].astype(str) == key.astype(str)).all(axis=1)  # NaN == NaN here, as in groupby
        arms.append(_representative(arm_label(key.to_dict()), role, trials[match], pick_set, sweep))
    return arms


def limit_arms(arms: Sequence[Arm], most: int = MAX_ARMS) -> list[Arm]:
    """``arms`` when there are at most ``most``, else the reference and oracle and the best others
    (by the representative's PSNR), in table order."""
    if len(arms) <= most:
        return list(arms)
    ranked = sorted(arms, key=lambda a: (not a.role, -(a.value if a.value is not None else -math.inf)))
    keep = {id(a) for a in ranked[:most]}
    return [a for a in arms if id(a) in keep]


def _representative(label: str, role: str, trials: pd.DataFrame, pick_set: str, sweep: Sweep) -> Arm:
    ok = trials[~trials["status"].isin(EXCLUDED_STATUSES) & trials["psnr"].notna()]
    ok = ok.sort_values(["psnr", "seed"], kind="stable").reset_index(drop=True)
    if ok.empty:
        return Arm(label, role, None, None, None, (), None, f"no usable trial ({len(trials)} diverged/error)")
    k = (len(ok) - 1) // 2
    rep = ok.iloc[k]
    values = tuple(float(v) for v in ok["psnr"])
    how = (
        f"trial {rep['trial_id']} (seed {int(rep['seed'])}): final {pick_set}/psnr {rep['psnr']:.2f} at step "
        f"{int(rep['step'])}, the median of its {len(ok)} usable seed(s)"
        + (" (the lower middle one: even count)" if len(ok) % 2 == 0 else "")
    )
    ckpt = sweep.path(rep["checkpoint"])
    if ckpt is None or not ckpt.exists():
        how += f"; its checkpoint {rep['checkpoint']} is missing, so no crops"
        ckpt = None
    return Arm(label, role, str(rep["trial_id"]), int(rep["seed"]), float(rep["psnr"]), values, ckpt, how)


# --------------------------------------------------------------------------------------- the crops
@dataclass
class Cell:
    """One crop: what made it, its PNG, the protocol's PSNR on the crop and on the whole image."""

    label: str
    png: bytes
    psnr_crop: float | None = None
    psnr_image: float | None = None


@dataclass
class ImageCrops:
    name: str
    box: tuple[int, int, int, int]  # y, x, height, width in HR px
    cells: list[Cell]


@dataclass
class SetCrops:
    """Every image of one test set; ``means``: mean whole-image PSNR per label (bicubic, each arm)."""

    name: str
    images: list[ImageCrops] = field(default_factory=list)
    means: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def crop_box(ref: np.ndarray, size: int, scale: int) -> tuple[int, int, int, int]:
    """The ``size``-px window (clipped to the image, multiples of ``scale``) with the most detail in
    ``ref`` (sum of |gradient| of its grey image): where SR methods differ, not a flat patch of sky."""
    h, w = ref.shape[:2]
    ch, cw = max(scale, min(size, h) // scale * scale), max(scale, min(size, w) // scale * scale)
    grey = ref.astype(np.float64).mean(axis=2) if ref.ndim == 3 else ref.astype(np.float64)
    grad = np.zeros_like(grey)
    grad[:, 1:] += np.abs(np.diff(grey, axis=1))
    grad[1:, :] += np.abs(np.diff(grey, axis=0))
    integral = np.pad(grad.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = 2 * scale
    best, box = -1.0, (0, 0, ch, cw)
    for y in range(0, h - ch + 1, step):
        for x in range(0, w - cw + 1, step):
            s = integral[y + ch, x + cw] - integral[y, x + cw] - integral[y + ch, x] + integral[y, x]
            if s > best:
                best, box = s, (y, x, ch, cw)
    return box


Upscale = Callable[[np.ndarray], np.ndarray]


def _upscalers(
    arms: Sequence[Arm], scale: int, device: str, tile: int
) -> tuple[dict[str, Upscale], list[str]]:
    """Bicubic and each arm's final generator (``label -> uint8 LR -> uint8 SR``), and load errors."""
    from csrgan.evaluation import bicubic_upscaler
    from csrgan.inference import model_upscaler

    ups: dict[str, Upscale] = {BICUBIC: bicubic_upscaler(scale)}
    errors = []
    for arm in arms:
        if arm.checkpoint is None:
            continue
        try:
            ups[arm.label] = model_upscaler(arm.checkpoint, device=device, tile=tile, scale=scale)
        except (OSError, ValueError) as exc:  # a damaged artefact: say so on the page, keep the rest
            errors.append(f"{arm.label}: cannot load {arm.checkpoint}: {exc}")
    return ups, errors


def _image_crops(
    name: str,
    lr: np.ndarray,
    hr: np.ndarray | None,
    gray: bool,
    ups: Mapping[str, Upscale],
    scale: int,
    size: int,
) -> ImageCrops:
    import torch

    from csrgan.metrics import evaluate_image

    with torch.no_grad():
        srs = {label: up(lr) for label, up in ups.items()}
    y, x, ch, cw = box = crop_box(hr if hr is not None else srs[BICUBIC], size, scale)
    cells = []
    for label, sr in srs.items():
        crop = sr[y : y + ch, x : x + cw]
        cell = Cell(label, png_bytes(crop))
        if hr is not None:
            cell.psnr_image = evaluate_image(sr, hr, scale, ("psnr",), gray=gray)["psnr"]
            cell.psnr_crop = evaluate_image(crop, hr[y : y + ch, x : x + cw], scale, ("psnr",), gray=gray)[
                "psnr"
            ]
        cells.append(cell)
    if hr is not None:
        cells.append(Cell(HR, png_bytes(hr[y : y + ch, x : x + cw])))
    return ImageCrops(name, box, cells)


def crop_sets(
    test_sets: Sequence[Mapping[str, Any]], scale: int, arms: Sequence[Arm], device: str = "cpu",
    size: int = DEFAULT_CROP, tile: int = 0,
) -> tuple[list[SetCrops], list[str]]:  # fmt: skip
    """Crops of every image of every test set (``data.test_sets`` of the sweep's config), and the
    arms whose generator could not be loaded (why, one line each: they are left out of the crops).
    ``tile``: the evaluation's ``eval.tile`` (LR px; 0 = whole images), which bounds memory on large
    images and gives the same pixels (tiling with the receptive-field overlap is exact)."""
    from csrgan.config import TestSetConfig
    from csrgan.evaluation import iter_test_images_gray

    ups, errors = _upscalers(arms, scale, device, tile)
    out = []
    for raw in test_sets:
        ts = TestSetConfig.model_validate(dict(raw))
        sc = SetCrops(ts.name)
        try:
            for name, lr, hr, gray in iter_test_images_gray(ts, scale):
                sc.images.append(_image_crops(name, lr, hr, gray, ups, scale, size))
        except (OSError, ValueError) as exc:  # moved or damaged test data: the rest of the report stands
            sc.errors.append(f"test set {ts.name}: {exc}")
        for label in ups:
            vals = [c.psnr_image for im in sc.images for c in im.cells if c.label == label]
            if vals and all(v is not None for v in vals):
                sc.means[label] = float(np.mean(vals))
        out.append(sc)
    return out, errors
