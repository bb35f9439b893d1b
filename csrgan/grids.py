"""Labelled comparison grids: the PNGs written at every evaluation (``grids/``).

A grid is a caption (set, step, run, what the numbers are), a title row with the column names, and
one row per test image (its name and position in the set on the left). Every cell shows the same
region of one image: a centred crop of :data:`GRID_CROP` HR px (the LR crop upsampled *nearest*, so
its real pixels are visible). Under a cell go the numbers that belong to it.

* :func:`sr_grid` — ``LR (nearest) | bicubic | SR (this model) | HR``. The number under bicubic and SR
  is the protocol's PSNR of the **whole image** (:func:`csrgan.metrics.evaluate_image`: Y channel,
  crop ``scale`` px, grey rule), so it equals that image's value in the metrics table; the bicubic is
  csrgan's MATLAB ``imresize``, the baseline's.
* :func:`degradation_grid` — ``bicubic LR (x) | G(x) (learned) | real LR (y)`` at LR scale, cells
  upscaled nearest to >= :data:`MIN_CELL` px. Numbers: ``PSNR vs x`` under G(x) (how much of the
  bicubic content G keeps; needs no ground truth) and ``PSNR vs y`` under x and G(x) (closeness to the
  real LR of the same scene: the per-image Table 2 values of
  :func:`csrgan.evaluation.evaluate_translation`, whole LR image, Y, no crop).
* :func:`rotation` / :func:`eval_round` — which test images an evaluation shows: ``count`` consecutive
  images from ``(round * count) mod n``, so over ``ceil(n / count)`` evaluations every image appears.

Each function returns a :class:`Grid`: the uint8 image plus the numbers drawn in it, and the pixel
layout (for tests). Cost: crops, one text render, and one bicubic per shown image (cached by content:
it does not depend on the model), so it is cheap enough for every evaluation.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from csrgan.data.resize import imresize
from csrgan.metrics import evaluate_image, psnr

__all__ = [
    "CELL",
    "DEGRADATION_COLUMNS",
    "GRID_CROP",
    "MIN_CELL",
    "SR_LABEL",
    "Cell",
    "DegradationImage",
    "Grid",
    "GridRow",
    "SRImage",
    "center_crop",
    "degradation_grid",
    "display_factor",
    "draw_grid",
    "eval_round",
    "rotation",
    "run_caption",
    "sr_grid",
]

GRID_CROP = 128  # HR px per side of the compared region: the grid is for eyeballing, not a full-size dump
CELL = 128  # display px per side of a cell box (smaller crops are centred on grey)
MIN_CELL = 96  # LR-scale cells are upscaled (nearest) to at least this, so the labels fit under them
SR_LABEL = "SR (this model)"
DEGRADATION_COLUMNS = ("bicubic LR (x)", "G(x) (learned)", "real LR (y)")

_PAD, _GAP, _LABEL_W, _LINE, _CAPTION_LINE = 6, 4, 88, 15, 16
_CELL_BG, _INK, _DIM = (224, 224, 224), (0, 0, 0), (90, 90, 90)


# ------------------------------------------------------------------------------------------ drawing
@dataclass(frozen=True)
class Cell:
    """One cell: a uint8 image (None: an empty grey box) and the text lines drawn under it."""

    image: np.ndarray | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GridRow:
    """One row: label lines (image name first) and one :class:`Cell` per column."""

    label: tuple[str, ...]
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Grid:
    """A drawn grid. ``values[r]`` holds the numbers drawn in row ``r`` (None: not computable).

    Layout (pixels, for tests and tools): ``caption_rows`` / ``title_rows`` are ``(y0, y1)`` bands;
    ``cell_origins[(r, c)]`` is the top-left of the image pasted into cell ``(r, c)``.
    """

    image: np.ndarray
    columns: tuple[str, ...]
    rows: tuple[str, ...]
    caption: str
    values: tuple[dict[str, float | None], ...] = ()
    caption_rows: tuple[int, int] = (0, 0)
    title_rows: tuple[int, int] = (0, 0)
    cell_origins: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's built-in scalable font: no font files


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` px; ``\\n`` starts a new line; a word wider than a line is cut."""
    if "\n" in text:
        return [line for part in text.split("\n") for line in _wrap(part, font, width)]
    lines: list[str] = []
    for word in text.split():
        cand = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(cand) <= width:
            lines[-1] = cand
            continue
        while font.getlength(word) > width and len(word) > 1:
            cut = max(k for k in range(1, len(word) + 1) if font.getlength(word[:k]) <= width or k == 1)
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines or [""]


def draw_grid(columns: Sequence[str], rows: Sequence[GridRow], caption: str) -> Grid:
    """Render ``rows`` under a caption and a title row of ``columns`` (white background, black text).

    Cell boxes are ``max(CELL, largest cell image)`` px; every row reserves as many note lines as the
    fullest cell has, so all rows have the same height.
    """
    if any(len(r.cells) != len(columns) for r in rows):
        raise ValueError(f"every row needs {len(columns)} cells (one per column)")
    imgs = [c.image for r in rows for c in r.cells if c.image is not None]
    box_h = max([CELL, *(i.shape[0] for i in imgs)])
    box_w = max([CELL, *(i.shape[1] for i in imgs)])
    n_notes = max([0, *(len(c.notes) for r in rows for c in r.cells)])
    width = 2 * _PAD + _LABEL_W + len(columns) * (box_w + _GAP)
    cap_lines = _wrap(caption, _font(13), width - 2 * _PAD)
    titles = [_wrap(c, _font(12), box_w) for c in columns]
    cap_y1 = _PAD + len(cap_lines) * _CAPTION_LINE
    title_y0 = cap_y1 + _GAP
    title_y1 = title_y0 + max([1, *(len(t) for t in titles)]) * _LINE
    row_h = box_h + n_notes * _LINE + _GAP + 2
    canvas = Image.new("RGB", (width, title_y1 + _GAP + len(rows) * row_h + _PAD), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(cap_lines):
        draw.text((_PAD, _PAD + k * _CAPTION_LINE), line, fill=_INK, font=_font(13))
    x0 = _PAD + _LABEL_W
    for c, lines in enumerate(titles):
        for k, line in enumerate(lines):
            tx = x0 + c * (box_w + _GAP) + (box_w - _font(12).getlength(line)) / 2
            draw.text((tx, title_y0 + k * _LINE), line, fill=_INK, font=_font(12))
    origins: dict[tuple[int, int], tuple[int, int]] = {}
    for r, row in enumerate(rows):
        y = title_y1 + _GAP + r * row_h
        _draw_label(draw, row.label, y, max_lines=box_h // _LINE)
        for c, cell in enumerate(row.cells):
            origins[(r, c)] = _draw_cell(canvas, draw, cell, x0 + c * (box_w + _GAP), y, box_w, box_h)
    return Grid(
        image=np.asarray(canvas, dtype=np.uint8).copy(), columns=tuple(columns),
        rows=tuple(r.label[0] if r.label else "" for r in rows), caption=caption,
        caption_rows=(_PAD, cap_y1), title_rows=(title_y0, title_y1), cell_origins=origins,
    )  # fmt: skip


def _draw_label(draw: ImageDraw.ImageDraw, label: Sequence[str], y: int, max_lines: int) -> None:
    """Row label in the left column: the first line (image name) black, the rest grey; at most
    ``max_lines`` lines (a long name is wrapped, then cut), so it never runs into the next row."""
    lines = [(line, i) for i, text in enumerate(label) for line in _wrap(text, _font(12), _LABEL_W - _GAP)]
    for k, (line, i) in enumerate(lines[:max_lines]):
        draw.text((_PAD, y + k * _LINE), line, fill=_INK if i == 0 else _DIM, font=_font(12))


def _draw_cell(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, cell: Cell, x: int, y: int, box_w: int, box_h: int
) -> tuple[int, int]:
    """Grey box, the image centred in it, notes centred below; returns the image's top-left."""
    draw.rectangle((x, y, x + box_w - 1, y + box_h - 1), fill=_CELL_BG)
    origin = (y, x)
    if cell.image is not None:
        img = cell.image if cell.image.ndim == 3 else np.repeat(cell.image[..., None], 3, axis=2)
        origin = (y + (box_h - img.shape[0]) // 2, x + (box_w - img.shape[1]) // 2)
        canvas.paste(Image.fromarray(np.ascontiguousarray(img[..., :3])), (origin[1], origin[0]))
    for k, line in enumerate(cell.notes):
        tx = x + (box_w - _font(12).getlength(line)) / 2
        draw.text((tx, y + box_h + 2 + k * _LINE), line, fill=_INK, font=_font(12))
    return origin


# --------------------------------------------------------------------------------------- selection
def rotation(n: int, count: int, round_: int) -> list[int]:
    """Indices (into a set of ``n`` images) shown at evaluation ``round_``: ``min(count, n)``
    consecutive images from ``(round_ * count) mod n``, wrapping. Deterministic; consecutive rounds
    tile the set, so every image has appeared after ``ceil(n / count)`` rounds."""
    if n <= 0 or count <= 0:
        return []
    count = min(count, n)
    start = (round_ * count) % n
    return [(start + i) % n for i in range(count)]


def eval_round(step: int, eval_every: int) -> int:
    """The evaluation index of ``step`` in a run evaluating every ``eval_every`` steps (and at the end):
    ``(step - 1) // eval_every``, so the first evaluation is round 0 and a final evaluation off the
    cadence gets a round of its own; derived from the step only, so a resumed run continues it."""
    return max(step - 1, 0) // max(eval_every, 1)


def run_caption(out_dir: str | Path, stage: str, params: Mapping[str, object]) -> str:
    """``<run> | <stage> | k=v ...``: the run is ``out_dir``'s name (a sweep trial's id), or its parent's
    when ``out_dir`` is named after the stage (``runs/<name>/<stage>``)."""
    out = Path(out_dir)
    name = out.parent.name if out.name == stage else out.name
    kv = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return " | ".join([name, stage, " ".join(kv)] if kv else [name, stage])


# ---------------------------------------------------------------------------------------- SR grids
@dataclass(frozen=True)
class SRImage:
    """One test image of an SR grid: uint8 LR, SR (``scale`` x LR), HR (None: no-reference set);
    ``gray``: HR read from a single-channel file (the protocol's grey rule); ``position``: a second
    label line such as ``image 3/14``."""

    name: str
    lr: np.ndarray
    sr: np.ndarray
    hr: np.ndarray | None
    gray: bool = False
    position: str = ""


def center_crop(img: np.ndarray, size: int, multiple: int) -> tuple[slice, slice]:
    """A centred window of <= ``size`` px per side whose size and offset are multiples of ``multiple``
    (so the same window divided by ``scale`` is exact on the LR)."""
    h, w = img.shape[:2]
    ch, cw = min(size, h) // multiple * multiple, min(size, w) // multiple * multiple
    y, x = (h - ch) // 2 // multiple * multiple, (w - cw) // 2 // multiple * multiple
    return slice(y, y + ch), slice(x, x + cw)


def _nearest(img: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1) if factor > 1 else img


def _db(value: float | None, prefix: str = "PSNR") -> str:
    return f"{prefix} n/a" if value is None else f"{prefix} {value:.2f} dB"


_BICUBIC_CACHE: OrderedDict[bytes, tuple[np.ndarray, float | None]] = OrderedDict()
_BICUBIC_CACHE_SIZE = 64


def _bicubic_cell(img: SRImage, scale: int, window: tuple[slice, slice]) -> tuple[np.ndarray, float | None]:
    """(crop of the MATLAB-bicubic upsampling, its whole-image PSNR). Model-independent, so cached by
    a digest of the LR/HR contents: a run pays for each test image's bicubic once."""
    key = hashlib.blake2b(repr((scale, img.gray, window)).encode(), digest_size=16)
    for arr in (img.lr, img.hr):
        if arr is not None:
            key.update(repr(arr.shape).encode())
            key.update(np.ascontiguousarray(arr).data)
    digest = key.digest()
    if digest in _BICUBIC_CACHE:
        _BICUBIC_CACHE.move_to_end(digest)
        return _BICUBIC_CACHE[digest]
    bic = imresize(img.lr, scale=scale)  # what csrgan.evaluation.evaluate_bicubic scores
    value = None if img.hr is None else _sr_psnr(bic, img.hr, scale, img.gray)
    _BICUBIC_CACHE[digest] = (bic[window].copy(), value)
    if len(_BICUBIC_CACHE) > _BICUBIC_CACHE_SIZE:
        _BICUBIC_CACHE.popitem(last=False)
    return _BICUBIC_CACHE[digest]


def _sr_psnr(sr: np.ndarray, hr: np.ndarray, scale: int, gray: bool) -> float:
    """The table's per-image PSNR (same function, same arguments as the evaluation loop)."""
    return float(evaluate_image(sr, hr, scale, ("psnr",), gray=gray)["psnr"])


def _sr_row(img: SRImage, scale: int, sr_label: str | None) -> tuple[GridRow, dict[str, float | None]]:
    ys, xs = center_crop(img.sr, GRID_CROP, scale)
    lr_crop = img.lr[ys.start // scale : ys.stop // scale, xs.start // scale : xs.stop // scale]
    bic, bic_psnr = _bicubic_cell(img, scale, (ys, xs))
    values: dict[str, float | None] = {"bicubic_psnr": bic_psnr}
    cells = [Cell(_nearest(lr_crop, scale)), Cell(bic, (_db(bic_psnr),))]
    if sr_label is not None:
        values["sr_psnr"] = None if img.hr is None else _sr_psnr(img.sr, img.hr, scale, img.gray)
        cells.append(Cell(img.sr[ys, xs], (_db(values["sr_psnr"]),)))
    cells.append(Cell(None, ("no HR",)) if img.hr is None else Cell(img.hr[ys, xs]))
    label = (img.name, img.position) if img.position else (img.name,)
    return GridRow(label, tuple(cells)), values


def sr_grid(
    images: Sequence[SRImage], scale: int, caption: str = "", sr_label: str | None = SR_LABEL
) -> Grid:
    """``LR (nearest) | bicubic | <sr_label> | HR`` for each image, PSNR under bicubic and SR.

    ``sr_label=None`` drops the SR column (the bicubic baseline's own grid would show bicubic twice).
    ``values[r]``: ``bicubic_psnr`` and ``sr_psnr`` (whole image, the protocol; None without HR).
    """
    built = [_sr_row(img, scale, sr_label) for img in images]
    columns = ["LR (nearest)", "bicubic", *([sr_label] if sr_label is not None else []), "HR"]
    note = (
        f"PSNR: whole image, Y channel, {scale} px border crop (= the per-image metric); "
        "cells: the same centre crop"
    )
    grid = draw_grid(columns, [r for r, _ in built], f"{caption}\n{note}" if caption else note)
    return _with_values(grid, [v for _, v in built])


def _with_values(grid: Grid, values: Sequence[dict[str, float | None]]) -> Grid:
    return Grid(
        grid.image, grid.columns, grid.rows, grid.caption, tuple(values), grid.caption_rows,
        grid.title_rows, grid.cell_origins,
    )  # fmt: skip


# ------------------------------------------------------------------------------- degradation grids
@dataclass(frozen=True)
class DegradationImage:
    """One test scene of a degradation grid, all uint8 at LR scale: ``x`` = bicubic of the HR,
    ``g`` = G(x), ``y`` = the real LR of the same scene."""

    name: str
    x: np.ndarray
    g: np.ndarray
    y: np.ndarray
    position: str = ""


def display_factor(size: int) -> int:
    """Nearest-neighbour factor for an LR crop of ``size`` px: about :data:`CELL` px, >= :data:`MIN_CELL`."""
    return max(1, CELL // max(size, 1), math.ceil(MIN_CELL / max(size, 1)))


def _degradation_row(img: DegradationImage, scale: int) -> tuple[GridRow, dict[str, float | None]]:
    ys, xs = center_crop(img.x, max(GRID_CROP // scale, 1), 1)
    f = display_factor(max(ys.stop - ys.start, xs.stop - xs.start))
    same = img.y.shape == img.x.shape
    y_win = (ys, xs) if same else center_crop(img.y, max(GRID_CROP // scale, 1), 1)
    values: dict[str, float | None] = {
        "g_vs_x_psnr": psnr(img.g, img.x, crop_border=0),
        "g_vs_y_psnr": psnr(img.g, img.y, crop_border=0) if same else None,
        "x_vs_y_psnr": psnr(img.x, img.y, crop_border=0) if same else None,
    }
    cells = (
        Cell(_nearest(img.x[ys, xs], f), (_db(values["x_vs_y_psnr"], "PSNR vs y"),)),
        Cell(_nearest(img.g[ys, xs], f), (_db(values["g_vs_x_psnr"], "PSNR vs x"),
                                          _db(values["g_vs_y_psnr"], "PSNR vs y"))),
        Cell(_nearest(img.y[y_win], f)),
    )  # fmt: skip
    label = (img.name, img.position) if img.position else (img.name,)
    return GridRow(label, cells), values


def degradation_grid(images: Sequence[DegradationImage], scale: int, caption: str = "") -> Grid:
    """``bicubic LR (x) | G(x) (learned) | real LR (y)`` per scene (centre crop of ``GRID_CROP // scale``
    LR px, upscaled nearest). ``values[r]``: ``g_vs_x_psnr``, ``g_vs_y_psnr``, ``x_vs_y_psnr`` (whole
    LR image, Y, no crop; None when x and y differ in size)."""
    built = [_degradation_row(img, scale) for img in images]
    note = (
        "PSNR vs x: how much of the bicubic content G keeps; PSNR vs y: closeness to the real LR of the "
        "same scene (Table 2). Whole LR image, Y channel, no crop; cells: centre crop, upscaled nearest"
    )
    grid = draw_grid(DEGRADATION_COLUMNS, [r for r, _ in built], f"{caption}\n{note}" if caption else note)
    return _with_values(grid, [v for _, v in built])
