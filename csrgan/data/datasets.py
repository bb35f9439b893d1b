"""Datasets: image folders, paired HR/LR patches, unpaired patches, full-image test sets, DIV2K layout.

Images are read as uint8 RGB ``(H, W, 3)`` through ``csrgan.data.io`` (a corrupt file is an
``ImageReadError`` naming it); samples are float32 ``[0, 1]`` tensors ``(3, h, w)``.

Reproducibility with DataLoader workers: sample ``i`` of epoch ``e`` draws everything (crop position,
flips) from ``np.random.default_rng([seed, e, i])``, never from a global or per-worker stream. So the
batch content depends only on (seed, epoch, index), not on which worker loaded it or in which order;
call ``set_epoch(e)`` (like ``DistributedSampler.set_epoch``) to get new crops each epoch.

HR/LR alignment follows the SR benchmarks: the HR is modcropped (top-left kept) to a multiple of the
scale, and the LR must be exactly ``HR / scale``; without an LR folder the LR is MATLAB bicubic
(``csrgan.data.resize.imresize``) of the modcropped HR.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from csrgan.data.degradations import DegradationPipeline, degrade_exact
from csrgan.data.io import is_grayscale_file, list_images, read_image, to_tensor
from csrgan.data.resize import imresize, modcrop

__all__ = [
    "AltLR",
    "CachedLR",
    "DIV2K_SPLITS",
    "DIV2K_TRACKS",
    "DIV2KPaths",
    "ImageFolder",
    "PairedPatchDataset",
    "PipelineLR",
    "TestSet",
    "UnpairedPatchDataset",
    "bicubic_lr",
    "div2k_paths",
    "match_lr_files",
]


class ImageFolder(Dataset):
    """The images directly inside ``root`` (sorted by name) as uint8 ``(H, W, 3)`` arrays.

    ``cache=True`` keeps decoded images in memory (meant for small sets: the demo set, Set5...). With
    DataLoader workers each worker process holds its own cache.
    """

    def __init__(self, root: str | Path, cache: bool = False) -> None:
        self.root = Path(root)
        self.paths: list[Path] = list_images(self.root)
        self.cache = cache
        self._cache: dict[int, np.ndarray] = {}

    @property
    def names(self) -> list[str]:
        """File stems, e.g. ``"0001"`` for ``0001.png``."""
        return [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.paths):
            raise IndexError(f"index {index} out of range for {len(self.paths)} images in {self.root}")
        if index in self._cache:
            return self._cache[index]
        img = read_image(self.paths[index])
        if self.cache:
            self._cache[index] = img
        return img


def lr_stem_candidates(hr_stem: str, scale: int) -> list[str]:
    """The LR file stems that may pair with HR stem ``hr_stem`` (see :func:`match_lr_files`)."""
    names = [hr_stem, f"{hr_stem}x{scale}", f"{hr_stem}_x{scale}"]
    if hr_stem.endswith("_HR"):
        names.append(hr_stem[: -len("_HR")] + "_LR")
    return names


def match_lr_files(hr_paths: Sequence[Path], lr_dir: str | Path, scale: int) -> list[Path]:
    """The LR file for each HR file, by name.

    Accepted LR stems for HR stem ``s``: ``s`` (same name), ``s + "x4"`` (DIV2K / EDSR benchmark
    naming), ``s + "_x4"``, and ``..._HR`` -> ``..._LR`` (SelfExSR naming). Every HR needs exactly one
    LR and every LR file must belong to an HR: a half-matched folder is an error naming the files.
    """
    lr_paths = list_images(lr_dir)
    by_stem = {p.stem: p for p in lr_paths}
    out: list[Path] = []
    used: set[Path] = set()
    for hr in hr_paths:
        names = lr_stem_candidates(hr.stem, scale)
        found = [by_stem[n] for n in names if n in by_stem]
        if not found:
            raise FileNotFoundError(
                f"no LR image for {hr} in {lr_dir} (looked for {', '.join(n + '.*' for n in names)})"
            )
        if len(found) > 1:
            raise ValueError(f"several LR images match {hr} in {lr_dir}: {', '.join(str(p) for p in found)}")
        out.append(found[0])
        used.add(found[0])
    orphans = [p for p in lr_paths if p not in used]
    if orphans:
        shown = ", ".join(p.name for p in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
        raise ValueError(f"{len(orphans)} LR image(s) in {lr_dir} have no HR image: {shown}")
    return out


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of an HR whose sides are multiples of ``scale``."""
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {w}x{h} is not a multiple of scale {scale}; modcrop it first")
    return imresize(hr, output_shape=(h // scale, w // scale))


def _load_pair(hr_path: Path, lr_path: Path | None, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr, hr) uint8 with HR modcropped and LR checked to be exactly HR/scale (error names the LR file)."""
    hr = read_image(hr_path)
    try:
        hr = modcrop(hr, scale)
    except ValueError as exc:
        raise ValueError(f"{hr_path}: {exc}") from None
    if lr_path is None:
        return bicubic_lr(hr, scale), hr
    lr = read_image(lr_path)
    want = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != want:
        raise ValueError(
            f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]} (WxH) but its HR {hr_path.name} modcropped to "
            f"x{scale} is {hr.shape[1]}x{hr.shape[0]}, so the LR must be exactly {want[1]}x{want[0]}"
        )
    return lr, hr


def _augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Random h-flip, v-flip and transpose (the 8 dihedral transforms), applied identically to all."""
    hflip, vflip, transpose = (bool(rng.random() < 0.5) for _ in range(3))
    out = []
    for a in arrays:
        if hflip:
            a = a[:, ::-1]
        if vflip:
            a = a[::-1]
        if transpose:
            a = a.transpose(1, 0, 2)
        out.append(a)
    return out


class _SeededPatches(Dataset):
    """Shared bookkeeping: ``length`` samples per epoch cycling over the images, per-sample RNG streams."""

    def __init__(self, n_images: int, length: int | None, seed: int) -> None:
        if length is not None and (not isinstance(length, int) or length < 1):
            raise ValueError(f"length must be a positive int or None, got {length!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.n_images = n_images
        self.length = n_images if length is None else length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New crops/flips for every sample (call once per epoch in every worker's dataset copy)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        return np.random.default_rng([self.seed, self.epoch, index])


# Stream tags of the per-sample generators (beside the crop/flip stream ``[seed, epoch, index]``).
_TAG_MIX, _TAG_ALT = 0x4D4958, 0x414C54  # "MIX", "ALT"


def mix_coin(seed: int, epoch: int, index: int, prob: float) -> bool:
    """Whether sample ``index`` of ``epoch`` takes the alternative LR (probability ``prob``): the coin of
    :class:`PairedPatchDataset`, public so that the joint trainer draws exactly the same ones."""
    return bool(np.random.default_rng([seed, epoch, index, _TAG_MIX]).random() < prob)


class AltLR(Protocol):
    """A second LR source for a paired patch (the report's "real-like" LR), used w.p. ``mix_prob``.

    ``patch(k, top, left, side, hr_patch, rng, lr_shape)`` returns the uint8 LR patch ``(side, side, 3)``
    of image ``k`` whose top-left LR pixel is ``(top, left)``; ``hr_patch`` is the aligned HR patch,
    ``rng`` the sample's own stream, ``lr_shape`` the ``(h, w)`` of the image's whole LR (HR / scale).
    ``id`` names the source (recorded with results).
    """

    id: str

    def patch(
        self,
        k: int,
        top: int,
        left: int,
        side: int,
        hr_patch: np.ndarray,
        rng: np.random.Generator,
        lr_shape: tuple[int, int],
    ) -> np.ndarray: ...


class CachedLR:
    """LR images made ahead of time, whole-image, one or more variants per HR image (same file stems).

    ``dirs``: one folder per variant (e.g. ``final/lr/0``, ``final/lr/1`` of a degradation stage, or
    ``data.train_lr``). A sample takes one variant (uniformly, from its own stream) and crops the patch
    aligned with its HR patch, so what G did at the patch's borders saw the image's real context.
    """

    def __init__(self, dirs: Sequence[str | Path], hr_paths: Sequence[Path], scale: int, id: str) -> None:
        if not dirs:
            raise ValueError("CachedLR needs at least one LR folder")
        self.id = id
        self.scale = scale
        self.paths = [match_lr_files(hr_paths, d, scale) for d in dirs]
        self._images: dict[tuple[int, int], np.ndarray] = {}

    def image(self, variant: int, k: int) -> np.ndarray:
        key = (variant, k)
        if key not in self._images:
            self._images[key] = read_image(self.paths[variant][k])
        return self._images[key]

    def patch(
        self,
        k: int,
        top: int,
        left: int,
        side: int,
        hr_patch: np.ndarray,
        rng: np.random.Generator,
        lr_shape: tuple[int, int],
    ) -> np.ndarray:
        variant = int(rng.integers(len(self.paths)))
        img = self.image(variant, k)
        if tuple(img.shape[:2]) != tuple(lr_shape):
            raise ValueError(
                f"{self.paths[variant][k]}: LR is {img.shape[1]}x{img.shape[0]} (WxH) but its HR modcropped "
                f"to x{self.scale} needs exactly {lr_shape[1]}x{lr_shape[0]} (HR / {self.scale})"
            )
        return img[top : top + side, left : left + side]


class PipelineLR:
    """A synthetic degradation applied on the fly to the HR patch (Real-ESRGAN style), seeded per sample."""

    def __init__(self, pipeline: DegradationPipeline, scale: int) -> None:
        self.pipeline, self.scale = pipeline, scale
        self.id = f"pipeline-{pipeline.id}"

    def patch(
        self,
        k: int,
        top: int,
        left: int,
        side: int,
        hr_patch: np.ndarray,
        rng: np.random.Generator,
        lr_shape: tuple[int, int],
    ) -> np.ndarray:
        return degrade_exact(self.pipeline, np.ascontiguousarray(hr_patch), self.scale, rng)[0]


class PairedPatchDataset(_SeededPatches):
    """Aligned random HR/LR training patches, optionally mixing in a second LR source per sample.

    ``patch_size`` is the HR side (a multiple of ``scale``); the LR patch is ``patch_size / scale`` at the
    aligned position. ``lr_dir=None``: LR = MATLAB bicubic of the modcropped HR. Sample ``i`` uses image
    ``i % n_images``. Returns ``{"lr": (3, h, w), "hr": (3, H, W), "index": i, "alt": bool}`` (float32
    in [0, 1]). ``cache=True`` keeps decoded (and, without ``lr_dir``, downscaled) pairs in memory.

    ``alt``/``mix_prob``: with probability ``mix_prob`` a sample's LR comes from ``alt`` (:class:`AltLR`)
    instead, at the same position and with the same flips (``"alt": True``). The draw is one uniform
    number per sample from its own stream ``[seed, epoch, index, MIX]``, taken whatever ``mix_prob`` is,
    so runs that differ only in ``p`` are coupled (the alt samples of ``p = 0.3`` are a subset of those
    of ``p = 0.5``), and the crops and flips do not depend on ``p`` at all.
    """

    def __init__(
        self,
        hr_dir: str | Path,
        scale: int = 4,
        patch_size: int = 96,
        lr_dir: str | Path | None = None,
        augment: bool = True,
        cache: bool = False,
        length: int | None = None,
        seed: int = 0,
        alt: AltLR | None = None,
        mix_prob: float = 0.0,
    ) -> None:
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive int, got {scale!r}")
        if not isinstance(patch_size, int) or patch_size < scale or patch_size % scale:
            raise ValueError(
                f"patch_size (HR) must be a positive multiple of scale {scale}, got {patch_size!r}"
            )
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob!r}")
        if mix_prob > 0 and alt is None:
            raise ValueError(f"mix_prob={mix_prob} > 0 needs an alternative LR source (alt)")
        self.hr_dir = Path(hr_dir)
        self.hr_paths = list_images(self.hr_dir)
        self.lr_dir = None if lr_dir is None else Path(lr_dir)
        self.lr_paths: list[Path] | None = (
            None if self.lr_dir is None else match_lr_files(self.hr_paths, self.lr_dir, scale)
        )
        super().__init__(len(self.hr_paths), length, seed)
        self.scale = scale
        self.patch_size = patch_size
        self.augment = augment
        self.cache = cache
        self.alt, self.mix_prob = alt, float(mix_prob)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def pair(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Full (lr, hr) uint8 images for one file."""
        if image_index in self._cache:
            return self._cache[image_index]
        lr_path = None if self.lr_paths is None else self.lr_paths[image_index]
        pair = _load_pair(self.hr_paths[image_index], lr_path, self.scale)
        if self.cache:
            self._cache[image_index] = pair
        return pair

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | bool]:
        rng = self._rng(index)
        k = index % self.n_images
        lr, hr = self.pair(k)
        lp = self.patch_size // self.scale
        h, w = lr.shape[:2]
        if h < lp or w < lp:
            raise ValueError(
                f"{self.hr_paths[k]}: LR {w}x{h} is smaller than the LR patch {lp}x{lp} "
                f"(patch_size {self.patch_size} / scale {self.scale})"
            )
        top, left = int(rng.integers(0, h - lp + 1)), int(rng.integers(0, w - lp + 1))
        s = self.scale
        lr_p = lr[top : top + lp, left : left + lp]
        hr_p = hr[top * s : (top + lp) * s, left * s : (left + lp) * s]
        use_alt = mix_coin(self.seed, self.epoch, index, self.mix_prob)
        if use_alt:
            assert self.alt is not None
            alt_rng = np.random.default_rng([self.seed, self.epoch, index, _TAG_ALT])
            lr_p = self.alt.patch(k, top, left, lp, hr_p, alt_rng, (h, w))
        if self.augment:
            lr_p, hr_p = _augment([lr_p, hr_p], rng)
        return {"lr": to_tensor(lr_p)[0], "hr": to_tensor(hr_p)[0], "index": index, "alt": use_alt}


class UnpairedPatchDataset(_SeededPatches):
    """Random ``patch_size`` patches from one image domain (e.g. real LR photos for the CycleGAN).

    Same seeding scheme as ``PairedPatchDataset``; returns ``{"image": (3, p, p), "index": i}``.
    """

    def __init__(
        self,
        root: str | Path,
        patch_size: int,
        augment: bool = True,
        cache: bool = False,
        length: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        self.images = ImageFolder(root, cache=cache)
        super().__init__(len(self.images), length, seed)
        self.root = Path(root)
        self.patch_size = patch_size
        self.augment = augment

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        rng = self._rng(index)
        k = index % self.n_images
        img = self.images[k]
        p = self.patch_size
        h, w = img.shape[:2]
        if h < p or w < p:
            raise ValueError(f"{self.images.paths[k]}: image {w}x{h} is smaller than the patch {p}x{p}")
        top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        patch = img[top : top + p, left : left + p]
        if self.augment:
            (patch,) = _augment([patch], rng)
        return {"image": to_tensor(patch)[0], "index": index}


class TestSet:
    """A full-image evaluation set: yields ``(name, lr_uint8, hr_uint8 | None)`` in file-name order.

    * ``hr_dir`` and ``lr_dir``: LR files matched by name (see ``match_lr_files``), each checked to be
      exactly the modcropped HR / ``scale`` when read.
    * ``hr_dir`` only: LR = MATLAB bicubic of the modcropped HR (the standard benchmark protocol).
    * ``lr_dir`` only (``hr_dir=None``): a no-reference set such as RealSRSet; ``has_hr`` is False and the
      third item is None.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        name: str,
        hr_dir: str | Path | None,
        lr_dir: str | Path | None = None,
        scale: int = 4,
        cache: bool = False,
    ) -> None:
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive int, got {scale!r}")
        if hr_dir is None and lr_dir is None:
            raise ValueError(f"test set {name!r}: give hr_dir, lr_dir or both")
        self.name = name
        self.scale = scale
        self.hr_dir = None if hr_dir is None else Path(hr_dir)
        self.lr_dir = None if lr_dir is None else Path(lr_dir)
        self.cache = cache
        self._cache: dict[int, tuple[str, np.ndarray, np.ndarray | None]] = {}
        self.hr_paths: list[Path] | None = None if self.hr_dir is None else list_images(self.hr_dir)
        if self.hr_paths is None:
            assert self.lr_dir is not None
            self.lr_paths: list[Path] | None = list_images(self.lr_dir)
        elif self.lr_dir is not None:
            self.lr_paths = match_lr_files(self.hr_paths, self.lr_dir, scale)
        else:
            self.lr_paths = None

    @property
    def has_hr(self) -> bool:
        return self.hr_paths is not None

    @property
    def names(self) -> list[str]:
        """Image names: HR file stems (or LR stems for no-reference sets)."""
        paths = self.hr_paths if self.hr_paths is not None else self.lr_paths
        assert paths is not None
        return [p.stem for p in paths]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray, np.ndarray | None]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for test set {self.name!r} of {len(self)} images")
        if index in self._cache:
            return self._cache[index]
        name = self.names[index]
        if self.hr_paths is None:
            assert self.lr_paths is not None
            item: tuple[str, np.ndarray, np.ndarray | None] = (name, read_image(self.lr_paths[index]), None)
        else:
            lr_path = None if self.lr_paths is None else self.lr_paths[index]
            lr, hr = _load_pair(self.hr_paths[index], lr_path, self.scale)
            item = (name, lr, hr)
        if self.cache:
            self._cache[index] = item
        return item

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for i in range(len(self)):
            yield self[i]

    def hr_is_gray(self, index: int) -> bool:
        """Whether image ``index``'s HR file is single-channel (scored as grey: ``metrics.gray_pair``)."""
        return self.hr_paths is not None and is_grayscale_file(self.hr_paths[index])

    def __repr__(self) -> str:
        if self.has_hr:
            src = f"hr={self.hr_dir}, lr={self.lr_dir or 'bicubic'}"
        else:
            src = f"lr={self.lr_dir} (no HR)"
        return f"TestSet({self.name!r}, {len(self)} images, x{self.scale}, {src})"


# ---------------------------------------------------------------------------------------------- DIV2K
DIV2K_SPLITS = ("train", "valid")
DIV2K_TRACKS = ("bicubic", "unknown")


def _check_split_track(split: str, track: str | None = None) -> None:
    if split not in DIV2K_SPLITS:
        raise ValueError(f"unknown DIV2K split {split!r}; known: {', '.join(DIV2K_SPLITS)}")
    if track is not None and track not in DIV2K_TRACKS:
        raise ValueError(f"unknown DIV2K track {track!r}; known: {', '.join(DIV2K_TRACKS)}")


@dataclass(frozen=True)
class DIV2KPaths:
    """The official DIV2K folder layout under ``root`` (as the archives extract):

    ``DIV2K_{train,valid}_HR/0001.png`` and ``DIV2K_{train,valid}_LR_{bicubic,unknown}/X4/0001x4.png``.
    Train is 0001-0800, valid 0801-0900.
    """

    root: Path

    def hr(self, split: str) -> Path:
        _check_split_track(split)
        return self.root / f"DIV2K_{split}_HR"

    def lr(self, split: str, track: str, scale: int = 4) -> Path:
        _check_split_track(split, track)
        return self.root / f"DIV2K_{split}_LR_{track}" / f"X{scale}"

    @property
    def train_hr(self) -> Path:
        return self.hr("train")

    @property
    def valid_hr(self) -> Path:
        return self.hr("valid")

    @property
    def train_lr_bicubic(self) -> Path:
        return self.lr("train", "bicubic")

    @property
    def train_lr_unknown(self) -> Path:
        return self.lr("train", "unknown")

    @property
    def valid_lr_bicubic(self) -> Path:
        return self.lr("valid", "bicubic")

    @property
    def valid_lr_unknown(self) -> Path:
        return self.lr("valid", "unknown")

    def missing(
        self, splits: Sequence[str] = DIV2K_SPLITS, tracks: Sequence[str] = DIV2K_TRACKS, scale: int = 4
    ) -> list[Path]:
        """The folders of the given splits/tracks that do not exist (empty list: all there)."""
        folders = [self.hr(s) for s in splits] + [self.lr(s, t, scale) for s in splits for t in tracks]
        return [f for f in folders if not f.is_dir()]


def div2k_paths(root: str | Path) -> DIV2KPaths:
    """The DIV2K layout under ``root`` (paths only; nothing is checked until you ask ``.missing()``)."""
    return DIV2KPaths(Path(root))
