"""Apply a trained SR generator to images: ``csrgan upscale`` and the model side of ``csrgan evaluate``.

The generator comes from a run's ``final/`` folder or any SR checkpoint folder
(:func:`csrgan.models.artifacts.load_generator`). Large images go through
:func:`csrgan.models.tiling.iter_tiles`: one ``tile + 2*overlap`` LR tile at a time on the device, and
each tile's output core is quantised to uint8 with :func:`csrgan.data.io.to_uint8` straight away, so
no float SR image is ever held. :func:`tiled_upscale_uint8` writes the cores into one preallocated
uint8 ``(s*h, s*w, 3)`` array (peak memory: that array + the uint8 LR + one tile's activations);
:func:`tiled_upscale_png` (what ``csrgan upscale`` runs) streams each finished row of tiles into the
PNG file instead: the uint8 LR + one row of tiles + one tile's activations, so of the image only the
LR is ever held. Quantising tile by tile is exactly the per-pixel rounding of quantising the assembled
image, so both are bit-identical to ``to_uint8(tiled_forward(...))``. With ``overlap`` at least the
generator's receptive-field radius in LR px the tiled result equals the untiled one up to float
summation order.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from csrgan.data.io import image_header, list_images, read_image, to_uint8
from csrgan.models.artifacts import load_with_spec
from csrgan.models.tiling import ModelFn, OnTile, count_tiles, iter_tiles

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "ModelUpscaler",
    "expand_inputs",
    "model_upscaler",
    "tiled_upscale_png",
    "tiled_upscale_uint8",
    "upscale_paths",
]

#: LR tile side of ``csrgan upscale``, chosen from benchmarks/upscale.py on CPU (streamed PNG path,
#: overlap 16, 1 thread so that CPU time is not inflated by other jobs on the shared 2-core machine):
#: CPU s per LR megapixel / peak RSS in MB (including ~540 MB of torch and set-up), random-init weights:
#:
#:   tile                          64        128       192       256        384        512
#:   quickstart (32 ch, 4 blocks)  61.9/635  45.7/749  38.6/951  37.2/1019  33.8/1663  33.5/1965  (1 MP)
#:   paper (64 ch, 16 blocks)      186/691   129/892   120/1130  113/1462   115/2137   121/3131   (0.5 MP)
#:
#: Time follows the padded area, (tile + 2*overlap)^2 / tile^2 = 2.25x at 64, 1.27x at 256, 1.13x at 512;
#: past 256 it gains <= 10% (quickstart) or loses (paper: larger activations fall out of cache), while
#: the tile's working set grows with tile^2 (~0.5-0.9 GB at 256, 1.4-2.6 GB at 512). 256 is the knee.
#: (With 2 threads the wall time is about half the CPU time on an idle machine.) On a GPU pass larger tiles.
DEFAULT_TILE = 256
#: LR px of context around each tile. SRResNet's receptive field is 9x9 head + 2 convs per block +
#: 3x3 tail + upsampler/9x9 tail (~ 4 + 2*n_blocks + 3 LR px of radius, 39 for the paper's 16 blocks);
#: 16 keeps tiled == untiled to float rounding for small models and makes seams invisible for the paper
#: model. Pass a larger overlap for bit-closer results on deep models.
DEFAULT_OVERLAP = 16


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
    return dev


def _uint8_to_float(x: torch.Tensor) -> torch.Tensor:
    """One LR window, uint8 -> float in [0, 1]: the same op as :func:`csrgan.data.io.to_tensor`."""
    return x.float().div_(255.0)


def _row_bands(
    model: ModelFn, lr: np.ndarray, scale: int, tile: int, overlap: int, on_tile: OnTile | None, whole: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(buffer, band)`` after each finished row of tiles: ``band`` is that row's uint8 SR rows.

    ``whole=True``: ``buffer`` is the preallocated ``(s*h, s*w, C)`` image and ``band`` a view of it;
    otherwise ``buffer`` holds one row of tiles and is reused (consume ``band`` before the next one).
    """
    if lr.ndim != 3 or lr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (h, w, C) image, got {lr.dtype} of shape {lr.shape}")
    h, w = lr.shape[:2]
    # A uint8 (1, C, h, w) view of the LR: each window becomes float only when it is run. Built as
    # to_tensor builds it (channels-last strides), so every window reaches the network in the same
    # memory layout as a window of to_tensor(lr): the same conv kernels, the same float results.
    x = torch.from_numpy(np.ascontiguousarray(lr)).unsqueeze(0).permute(0, 3, 1, 2)
    buf: np.ndarray | None = None
    band = np.empty((0, 0, 0), np.uint8)
    for t, core in iter_tiles(model, x, scale, tile, overlap, on_tile=on_tile, prepare=_uint8_to_float):
        q = to_uint8(core)[0]  # (s*th, s*tw, C): the same rounding as quantising the whole image
        if buf is None:
            rows = h if whole else min(tile or h, h)
            buf = np.empty((rows * scale, w * scale, q.shape[-1]), np.uint8)
        if t.x0 == 0:
            band = buf[t.y0 * scale : t.y1 * scale] if whole else buf[: (t.y1 - t.y0) * scale]
        band[:, t.x0 * scale : t.x1 * scale] = q
        if t.x1 == w:
            yield buf, band


def tiled_upscale_uint8(
    model: ModelFn,
    lr: np.ndarray,
    scale: int,
    tile: int = 0,
    overlap: int = DEFAULT_OVERLAP,
    on_tile: OnTile | None = None,
) -> np.ndarray:
    """``to_uint8(tiled_forward(model, to_tensor(lr), ...))[0]``, bit for bit, without the float image.

    ``lr`` is uint8 ``(h, w, 3)``; returns uint8 ``(s*h, s*w, 3)``, preallocated once and filled tile by
    tile. ``on_tile(done, total)`` is called after each tile.
    """
    out: np.ndarray | None = None
    for buf, _ in _row_bands(model, lr, scale, tile, overlap, on_tile, whole=True):
        out = buf
    assert out is not None
    return out


def tiled_upscale_png(
    model: ModelFn,
    lr: np.ndarray,
    scale: int,
    path: str | Path,
    tile: int = 0,
    overlap: int = DEFAULT_OVERLAP,
    on_tile: OnTile | None = None,
) -> None:
    """Upscale ``lr`` straight into the PNG file ``path``, one row of tiles at a time.

    The pixels are those of :func:`tiled_upscale_uint8`; only one row of tiles (``s*tile`` SR rows) is
    held, plus one tile's activations. The file is written under a temporary name and renamed when
    complete, so a failure leaves no truncated PNG behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    h, w = lr.shape[:2]
    try:
        with open(part, "wb") as fp:
            png: _PngWriter | None = None
            for _, band in _row_bands(model, lr, scale, tile, overlap, on_tile, whole=False):
                png = png or _PngWriter(fp, w * scale, h * scale, band.shape[-1])
                png.write(band)
            assert png is not None
            png.close()
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


_PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def _png_filter(rows: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG-filter ``rows`` (r, L) uint8 given the row above: per row the filter (None, Sub, Up,
    Average, Paeth) whose output has the least sum of |signed bytes|, libpng's and Pillow's heuristic.
    Returns (r, 1 + L) uint8: the filter type byte, then the filtered row."""
    x = rows.astype(np.int16)
    up = np.empty_like(x)
    up[0], up[1:] = prev, x[:-1]
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    ul = np.zeros_like(x)
    ul[:, bpp:] = up[:, :-bpp]
    pa, pb, pc = np.abs(up - ul), np.abs(left - ul), np.abs(left + up - 2 * ul)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
    cands = np.stack([x, x - left, x - up, x - ((left + up) >> 1), x - paeth]).astype(np.uint8)
    score = np.abs(cands.view(np.int8).astype(np.int16)).sum(-1, dtype=np.int64)  # (5, r)
    best = score.argmin(0)
    return np.concatenate([best.astype(np.uint8)[:, None], cands[best, np.arange(len(x))]], axis=1)


class _PngWriter:
    """A PNG file written row band by row band (8-bit, zlib level 6 as Pillow's default), so the
    image never has to exist in one piece: Pillow would first copy it into its own 4-bytes-per-pixel
    buffer (1.33x the uint8 image for RGB)."""

    def __init__(self, fp: BinaryIO, width: int, height: int, channels: int, level: int = 6) -> None:
        if channels not in _PNG_COLOR_TYPES:
            raise ValueError(f"PNG: cannot write {channels}-channel images")
        self.fp, self.width, self.height, self.channels = fp, width, height, channels
        self.rows_left = height
        self.prev = np.zeros(width * channels, np.uint8)
        self.z = zlib.compressobj(level)
        fp.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0))

    def _chunk(self, tag: bytes, data: bytes) -> None:
        self.fp.write(struct.pack(">I", len(data)) + tag)
        self.fp.write(data)
        self.fp.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(tag))))

    def write(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != (self.width, self.channels) or len(rows) > self.rows_left:
            raise ValueError(f"PNG: rows of shape {rows.shape} do not fit a {self.width}x{self.height} image")
        flat = rows.reshape(len(rows), -1)
        for r0 in range(0, len(flat), 16):  # 16 rows at a time bounds the filter's temporaries
            chunk = flat[r0 : r0 + 16]
            data = self.z.compress(_png_filter(chunk, self.prev, self.channels).tobytes())
            self.prev = chunk[-1].copy()
            if data:
                self._chunk(b"IDAT", data)
        self.rows_left -= len(rows)

    def close(self) -> None:
        if self.rows_left:
            raise ValueError(f"PNG: {self.rows_left} of {self.height} rows were never written")
        self._chunk(b"IDAT", self.z.flush())
        self._chunk(b"IEND", b"")


class ModelUpscaler:
    """``uint8 (h, w, 3) -> uint8 (s*h, s*w, 3)`` with a trained generator (tiled when ``tile > 0``)."""

    def __init__(self, model: nn.Module, scale: int, tile: int = 0, overlap: int = DEFAULT_OVERLAP) -> None:
        if tile < 0 or overlap < 0:
            raise ValueError(f"tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")
        self.model, self.scale, self.tile, self.overlap = model, scale, tile, overlap

    def n_tiles(self, h: int, w: int) -> int:
        """Tiles run for an ``h x w`` LR image (the ``total`` that ``on_tile`` sees)."""
        return count_tiles(h, w, self.tile)

    def __call__(self, lr: np.ndarray, on_tile: OnTile | None = None) -> np.ndarray:
        # The LR stays on the CPU: one tile at a time goes to the model's device, and only its uint8
        # core comes back, which bounds accelerator memory and host memory alike.
        return tiled_upscale_uint8(self.model, lr, self.scale, self.tile, self.overlap, on_tile)

    def write_png(self, lr: np.ndarray, path: str | Path, on_tile: OnTile | None = None) -> None:
        """Upscale ``lr`` into the PNG ``path`` without holding the SR image (:func:`tiled_upscale_png`)."""
        tiled_upscale_png(self.model, lr, self.scale, path, self.tile, self.overlap, on_tile)


def model_upscaler(
    checkpoint: str | Path,
    device: str | torch.device = "cpu",
    tile: int = 0,
    scale: int | None = None,
    overlap: int | None = None,
) -> ModelUpscaler:
    """The generator in ``checkpoint`` as an upscaler, at the scale its spec records. ``scale``, when
    given, must match it (a x4 model cannot score a x2 set). ``overlap`` defaults to the network's
    ``receptive_radius`` (exact tiling; :data:`DEFAULT_OVERLAP` for a network without one)."""
    model, spec = load_with_spec(Path(checkpoint), "sr", device=_device(device), scale=scale)
    if overlap is None:
        overlap = int(getattr(model, "receptive_radius", DEFAULT_OVERLAP))
    return ModelUpscaler(model, spec.scale, tile=tile, overlap=overlap)


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted). Raises on missing paths."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(list_images(p))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not out:
        raise ValueError("no input images given")
    return out


def _lr_size(path: Path) -> tuple[int, int]:
    """``(h, w)`` of an image file from its header (no decoding), to size the progress bar."""
    w, h, _ = image_header(path)
    return h, w


def _check_targets(files: Sequence[Path], targets: Sequence[Path]) -> None:
    seen: dict[Path, Path] = {}
    for src, dst in zip(files, targets, strict=True):
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {src} would both be written to {dst}; upscale them separately")
        if dst.resolve() == src.resolve():
            raise ValueError(f"{src}: the output would overwrite the input; choose another output folder")
        seen[dst] = src


def upscale_paths(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Upscale every input image (files, or folders of images) into ``out_dir/<stem>.png``; returns them.

    Fails before any work when two inputs share a stem (one output would overwrite the other), an
    output would overwrite its own input, or an input is not a readable image. ``tile=0`` runs each
    image whole. ``progress`` shows one bar (stderr) that counts tiles over all images, with a rate.
    Each PNG is streamed to disk one row of tiles at a time (:func:`tiled_upscale_png`).
    """
    from tqdm import tqdm

    files = expand_inputs(inputs)
    out_dir = Path(out_dir)
    targets = [out_dir / f"{f.stem}.png" for f in files]
    _check_targets(files, targets)
    sizes = [_lr_size(f) for f in files]
    up = model_upscaler(checkpoint, device=device, tile=tile, overlap=overlap)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(up.n_tiles(h, w) for h, w in sizes)
    with tqdm(total=total, desc=f"upscale x{up.scale}", unit="tile", disable=not progress) as bar:
        for i, (src, dst) in enumerate(zip(files, targets, strict=True), 1):
            bar.set_postfix_str(f"{src.name} ({i}/{len(files)})")
            up.write_png(read_image(src), dst, on_tile=lambda done, n: bar.update(1))
    return targets
