"""Run a convolutional network over a large image tile by tile, with the same result as in one piece.

:func:`iter_tiles` is the primitive: it runs the model on one ``tile + 2*overlap`` LR tile at a time
and yields each tile's *core* output, in row-major order, so a caller can consume the SR image tile by
tile (``csrgan.inference`` quantises each core to uint8 straight away and never holds a float SR image).
:func:`tiled_forward` assembles the cores into one float tensor, for callers that need floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

__all__ = ["ModelFn", "OnTile", "Tile", "count_tiles", "iter_tiles", "tile_grid", "tiled_forward"]

#: A network, or any function ``(N, C, h, w) -> (N, C, s*h, s*w)``.
ModelFn = Callable[[torch.Tensor], torch.Tensor]
#: Progress callback ``on_tile(done, total)``, called after each tile with the number done so far.
OnTile = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile in LR px: the core ``[y0:y1, x0:x1]`` whose output is kept, and the padded window
    ``[py0:py1, px0:px1]`` (core + up to ``overlap`` px of context, clipped to the image) that is run."""

    y0: int
    y1: int
    x0: int
    x1: int
    py0: int
    py1: int
    px0: int
    px1: int


def count_tiles(h: int, w: int, tile: int) -> int:
    """How many tiles :func:`iter_tiles` runs for an ``h x w`` LR image: 1 when ``tile == 0`` or the
    image fits in one tile, else ``ceil(h / tile) * ceil(w / tile)``."""
    if tile == 0 or (h <= tile and w <= tile):
        return 1
    return math.ceil(h / tile) * math.ceil(w / tile)


def tile_grid(h: int, w: int, tile: int, overlap: int) -> list[Tile]:
    """The tiles of an ``h x w`` LR image in row-major order (one whole-image tile when it fits)."""
    if tile == 0 or (h <= tile and w <= tile):
        return [Tile(0, h, 0, w, 0, h, 0, w)]
    out = []
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            pad = (max(y0 - overlap, 0), min(y1 + overlap, h), max(x0 - overlap, 0), min(x1 + overlap, w))
            out.append(Tile(y0, y1, x0, x1, *pad))
    return out


def _model_device(model: ModelFn, fallback: torch.device) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return fallback


def _check_args(lr: torch.Tensor, tile: int, overlap: int) -> None:
    if lr.ndim != 4:
        raise ValueError(f"tiled_forward expects (N, C, h, w), got shape {tuple(lr.shape)}")
    if tile < 0 or overlap < 0:
        raise ValueError(f"tiled_forward: tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")


@torch.no_grad()
def iter_tiles(
    model: ModelFn,
    lr: torch.Tensor,
    scale: int,
    tile: int = 0,
    overlap: int = 16,
    on_tile: OnTile | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[Tile, torch.Tensor]]:
    """``(tile, core_sr)`` for every tile of ``lr`` ``(N, C, h, w)``, row-major; ``core_sr`` is
    ``model``'s output for the tile's core, ``(N, C', scale*(y1-y0), scale*(x1-x0))`` on the model's
    device. See :func:`tiled_forward` for the exactness argument.

    ``prepare`` maps each LR window before the model sees it (e.g. uint8 -> float on the fly, so the
    caller never converts the whole LR image); ``on_tile(done, total)`` is called after each tile.
    """
    _check_args(lr, tile, overlap)
    device = _model_device(model, lr.device)
    h, w = lr.shape[-2:]
    tiles = tile_grid(h, w, tile, overlap)
    for done, t in enumerate(tiles, 1):
        x = lr[..., t.py0 : t.py1, t.px0 : t.px1]
        x = prepare(x) if prepare is not None else x
        sr = model(x.to(device))
        if sr.shape[-2:] != ((t.py1 - t.py0) * scale, (t.px1 - t.px0) * scale):
            raise ValueError(
                f"tiled_forward: model output {tuple(sr.shape[-2:])} for input "
                f"{(t.py1 - t.py0, t.px1 - t.px0)} is not x{scale}"
            )
        cy, cx = (t.y0 - t.py0) * scale, (t.x0 - t.px0) * scale
        yield t, sr[..., cy : cy + (t.y1 - t.y0) * scale, cx : cx + (t.x1 - t.x0) * scale]
        del sr, x  # free the tile's output before the next tile runs
        if on_tile is not None:
            on_tile(done, len(tiles))


@torch.no_grad()
def tiled_forward(
    model: ModelFn,
    lr: torch.Tensor,
    scale: int,
    tile: int = 0,
    overlap: int = 16,
    on_tile: OnTile | None = None,
) -> torch.Tensor:
    """``model(lr)`` computed tile by tile: ``(N, C, h, w)`` -> ``(N, C, scale*h, scale*w)``.

    The LR is cut into ``tile x tile`` cores; each core is run with ``overlap`` LR px of real context
    on every side (less at the image border, where the context is the image border itself, as in the
    untiled run), and only the core's output is kept. For a convolutional net whose receptive-field
    radius (in LR px) is ``<= overlap``, every kept output pixel sees exactly the input it sees in the
    untiled run, so the result equals ``model(lr)`` up to float summation order (no blending seams).
    Only nets with image-global operations (e.g. BatchNorm in *train* mode) differ: call ``.eval()``.

    Memory: one ``(tile + 2*overlap)`` input tile at a time on the model's device; the output is
    assembled on ``lr``'s device (put ``lr`` on the CPU to bound accelerator memory for huge images).
    The output is a float tensor of the whole SR image: to get uint8 with memory bounded by the tile,
    consume :func:`iter_tiles` instead (as ``csrgan.inference`` does). ``tile=0`` runs the whole image
    at once. ``on_tile(done, total)``, when given, is called after each tile (``total`` is
    :func:`count_tiles`).
    """
    _check_args(lr, tile, overlap)
    h, w = lr.shape[-2:]
    if count_tiles(h, w, tile) == 1:
        out = model(lr.to(_model_device(model, lr.device))).to(lr.device)
        if on_tile is not None:
            on_tile(1, 1)
        return out
    out: torch.Tensor | None = None
    for t, core in iter_tiles(model, lr, scale, tile, overlap, on_tile=on_tile):
        if out is None:
            out = lr.new_zeros((lr.shape[0], core.shape[1], h * scale, w * scale), dtype=core.dtype)
        out[..., t.y0 * scale : t.y1 * scale, t.x0 * scale : t.x1 * scale] = core.to(out.device)
    assert out is not None
    return out
