"""An offline demo dataset built from colour photos bundled with scikit-image (no download, no pooch).

Layout under ``DIR`` (``demo_layout``)::

    train/HR/          HR halves of the training photos (modcrop 4), paired with their bicubic LR
    train/LR_real/     "real" LR domain: default-degradation LR of random crops of the *other* halves
    test/bicubic/HR|LR held-out photos (halves, modcrop 4) and their MATLAB-bicubic x4 LR
    test/unknown/HR|LR the same HR with LR from the default degradation (one sampled per image)
    manifest.json      sources (+ sha256), seed, pipeline config + id, every file with box/size/sha256

Why halves: each training photo is cut in two along its long side and a seeded coin picks which half
feeds the paired HR set and which the real-LR set, so the two CycleGAN domains never share content (the
domains are unpaired, as they are in practice), while the real half still yields many differently
degraded LR crops (each crop gets its own sampled blur/noise/JPEG, so the real domain is a distribution,
not one degradation). Test photos are never used for training.

Sources: astronaut, coffee, motorcycle_left (train) and chelsea, rocket (test): the natural colour
photos that ship inside the scikit-image wheel. Left out on purpose: motorcycle_right (a stereo twin
of motorcycle_left), synthetic charts, and scientific images (hubble, ihc, retina).

Deterministic for a seed; idempotent: when ``manifest.json`` matches the requested build and every
listed file is intact, nothing is rewritten. The manifest is written last, so a crashed build is redone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import csrgan
from csrgan.data.degradations import DegradationPipeline, default_pipeline, degrade_exact
from csrgan.data.io import read_image, write_image
from csrgan.data.resize import imresize

__all__ = [
    "DEMO_FORMAT",
    "TEST_SOURCES",
    "TRAIN_SOURCES",
    "DemoLayout",
    "build_demo",
    "demo_layout",
    "skimage_image_path",
]

DEMO_FORMAT = "csrgan-demo/1"
SCALE = 4
TRAIN_SOURCES = ("astronaut.png", "coffee.png", "motorcycle_left.png")
TEST_SOURCES = ("chelsea.png", "rocket.jpg")
_BUILDING = ".csrgan-demo-building"
_LABELS = {"motorcycle_left.png": "motorcycle"}  # file-name prefix of each source's outputs


def _label(src: str) -> str:
    return _LABELS.get(src, Path(src).stem)


@dataclass(frozen=True)
class DemoLayout:
    """Paths of a demo set rooted at ``root``."""

    root: Path

    @property
    def train_hr(self) -> Path:
        return self.root / "train" / "HR"

    @property
    def train_lr_real(self) -> Path:
        return self.root / "train" / "LR_real"

    def test_hr(self, kind: str) -> Path:
        return self.root / "test" / self._kind(kind) / "HR"

    def test_lr(self, kind: str) -> Path:
        return self.root / "test" / self._kind(kind) / "LR"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @staticmethod
    def _kind(kind: str) -> str:
        if kind not in ("bicubic", "unknown"):
            raise ValueError(f"unknown demo test set {kind!r}; known: bicubic, unknown")
        return kind


def demo_layout(root: str | Path) -> DemoLayout:
    return DemoLayout(Path(root))


def unusable_demo_dir(root: str | Path) -> str | None:
    """Why the demo set cannot be built at ``root`` (a file; a non-empty folder that is neither a demo
    set nor an interrupted build of one), or None. :func:`build_demo` and the preflight both ask this."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        return f"{root} is a file; the demo set needs a folder"
    ours = demo_layout(root).manifest.is_file() or (root / _BUILDING).exists()
    if root.is_dir() and not ours and any(root.iterdir()):
        return (
            f"{root} is not empty and has no demo manifest.json; choose an empty or new folder for the "
            "demo set"
        )
    return None


def skimage_image_path(filename: str) -> Path:
    """Path of an image bundled in the installed scikit-image (never downloads)."""
    import skimage
    import skimage.data

    path = Path(skimage.data.__file__).parent / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the demo set needs the images bundled with scikit-image "
            f"(installed: {skimage.__version__}); reinstall scikit-image"
        )
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _halves(img: np.ndarray) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Boxes ``(top, left, h, w)`` of the two halves of ``img`` along its longer side (width on ties)."""
    h, w = img.shape[:2]
    if w >= h:
        return (0, 0, h, w // 2), (0, w // 2, h, w - w // 2)
    return (0, 0, h // 2, w), (h // 2, 0, h - h // 2, w)


def _crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    t, left, h, w = box
    return img[t : t + h, left : left + w]


def _modcrop_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    t, left, h, w = box
    return t, left, h - h % SCALE, w - w % SCALE


def _settings(seed: int, pipeline: DegradationPipeline, real_crop: int, real_crops: int) -> dict[str, Any]:
    sources = {
        name: _sha256(skimage_image_path(name).read_bytes()) for name in (*TRAIN_SOURCES, *TEST_SOURCES)
    }
    return {
        "format": DEMO_FORMAT,
        "csrgan_version": csrgan.__version__,
        "seed": seed,
        "scale": SCALE,
        "sources": {"train": list(TRAIN_SOURCES), "test": list(TEST_SOURCES), "sha256": sources},
        "real_crop": real_crop,
        "real_crops_per_image": real_crops,
        "pipeline": {"id": pipeline.id, "config": pipeline.to_config()},
    }


def _intact(root: Path, manifest: dict[str, Any]) -> bool:
    for f in manifest.get("files", []):
        p = root / f["path"]
        if not p.is_file() or _sha256(p.read_bytes()) != f["sha256"]:
            return False
    return bool(manifest.get("files"))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def build_demo(
    out: str | Path,
    seed: int = 0,
    *,
    real_crop: int = 256,
    real_crops_per_image: int = 12,
    pipeline: DegradationPipeline | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Build (or reuse) the demo set in ``out``; returns the manifest.

    ``real_crop``: HR-side size of the crops degraded into ``train/LR_real`` (LR = ``real_crop / 4``).
    ``force``: rebuild even if the manifest matches. ``out`` must be empty, absent or a demo set.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if real_crop < SCALE or real_crop % SCALE:
        raise ValueError(f"real_crop must be a positive multiple of {SCALE}, got {real_crop}")
    if real_crops_per_image < 1:
        raise ValueError(f"real_crops_per_image must be >= 1, got {real_crops_per_image}")
    pipeline = default_pipeline() if pipeline is None else pipeline
    root = Path(out)
    layout = demo_layout(root)
    settings = _settings(seed, pipeline, real_crop, real_crops_per_image)

    if layout.manifest.is_file():
        try:
            old = json.loads(layout.manifest.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{layout.manifest} is not valid JSON ({exc}); delete it to rebuild") from None
        if not force and old.get("settings") == settings and _intact(root, old):
            _say(f"demo set in {root} is up to date (seed {seed}, {len(old['files'])} files), skipping")
            return old
        _say(f"demo set in {root} does not match the request (or files changed); rebuilding")
    elif (why := unusable_demo_dir(root)) is not None:
        raise FileExistsError(why)

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / _BUILDING
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = _build_into(tmp, seed, pipeline, real_crop, real_crops_per_image)

    for sub in ("train", "test"):
        if (root / sub).exists():
            shutil.rmtree(root / sub)
        (tmp / sub).replace(root / sub)
    manifest = {
        "settings": settings,
        "counts": {
            "train_hr": sum(f["role"] == "train_hr" for f in files),
            "train_lr_real": sum(f["role"] == "train_lr_real" for f in files),
            "test_images": sum(f["role"] == "test_hr_bicubic" for f in files),
        },
        "files": files,
    }
    part = root / "manifest.json.part"
    part.write_text(json.dumps(manifest, indent=1))
    part.replace(layout.manifest)
    shutil.rmtree(tmp)
    c = manifest["counts"]
    _say(
        f"demo set written to {root}: {c['train_hr']} train HR, {c['train_lr_real']} real LR, "
        f"{c['test_images']} test images x 2 LR kinds (seed {seed}, pipeline {pipeline.id})"
    )
    return manifest


class _Writer:
    """Writes the demo's images under ``root`` and keeps their manifest entries."""

    def __init__(self, root: Path) -> None:
        self.root, self.layout, self.files = root, demo_layout(root), []

    def save(self, path: Path, img: np.ndarray, **info: Any) -> None:
        write_image(path, img)
        self.files.append(
            {
                "path": path.relative_to(self.root).as_posix(),
                **info,
                "size": [int(img.shape[0]), int(img.shape[1])],
                "sha256": _sha256(path.read_bytes()),
            }
        )


def _half_names(halves: tuple[tuple[int, int, int, int], ...]) -> tuple[str, str]:
    return ("left", "right") if halves[0][0] == halves[1][0] else ("top", "bottom")


def _build_train(w: _Writer, seed: int, pipeline: DegradationPipeline, real_crop: int, n_crops: int) -> None:
    """Each training photo: one half is a train HR image, random crops of the other half are degraded
    into the unpaired real-LR domain (which half is drawn per photo)."""
    assign = np.random.default_rng([seed, 0])
    for j, src in enumerate(TRAIN_SOURCES):
        img = read_image(skimage_image_path(src))
        stem, halves = _label(src), _halves(img)
        names = _half_names(halves)
        hr_i = int(assign.integers(2))
        hr_box = _modcrop_box(halves[hr_i])
        w.save(w.layout.train_hr / f"{stem}_{names[hr_i]}.png", _crop(img, hr_box), role="train_hr",
               source=src, box=list(hr_box), degradation=None)  # fmt: skip
        real_box = halves[1 - hr_i]
        real = _crop(img, real_box)
        ch = min(real_crop, real.shape[0] - real.shape[0] % SCALE)
        cw = min(real_crop, real.shape[1] - real.shape[1] % SCALE)
        for k in range(n_crops):
            rng = np.random.default_rng([seed, 1, j, k])
            t = int(rng.integers(0, real.shape[0] - ch + 1))
            left = int(rng.integers(0, real.shape[1] - cw + 1))
            lr, record = degrade_exact(pipeline, real[t : t + ch, left : left + cw], SCALE, rng)
            box = [real_box[0] + t, real_box[1] + left, ch, cw]
            w.save(w.layout.train_lr_real / f"{stem}_{names[1 - hr_i]}_{k:02d}.png", lr,
                   role="train_lr_real", source=src, box=box, degradation=record)  # fmt: skip


def _build_test(w: _Writer, seed: int, pipeline: DegradationPipeline) -> None:
    """Each test photo's two halves, with a MATLAB-bicubic and an "unknown" (pipeline) LR each."""
    i = 0
    for src in TEST_SOURCES:
        img = read_image(skimage_image_path(src))
        stem, halves = _label(src), _halves(img)
        for half, box in zip(_half_names(halves), halves, strict=True):
            box = _modcrop_box(box)
            hr = _crop(img, box)
            name, where = f"{stem}_{half}.png", {"source": src, "box": list(box)}
            lr_bic = imresize(hr, output_shape=(hr.shape[0] // SCALE, hr.shape[1] // SCALE))
            lr_unk, record = degrade_exact(pipeline, hr, SCALE, np.random.default_rng([seed, 2, i]))
            for kind in ("bicubic", "unknown"):
                w.save(w.layout.test_hr(kind) / name, hr, role=f"test_hr_{kind}", **where, degradation=None)
            w.save(w.layout.test_lr("bicubic") / name, lr_bic, role="test_lr_bicubic", **where,
                   degradation="matlab_bicubic_x4")  # fmt: skip
            w.save(w.layout.test_lr("unknown") / name, lr_unk, role="test_lr_unknown", **where,
                   degradation=record)  # fmt: skip
            i += 1


def _build_into(
    tmp: Path, seed: int, pipeline: DegradationPipeline, real_crop: int, n_crops: int
) -> list[dict[str, Any]]:
    w = _Writer(tmp)
    _build_train(w, seed, pipeline, real_crop, n_crops)
    _build_test(w, seed, pipeline)
    return w.files
