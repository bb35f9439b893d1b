"""Seeded, composable synthetic "real-world" degradations (blur, resize, noise, JPEG), configured as data.

A pipeline is a list of steps ``{type: NAME, **params}`` resolved through ``DEGRADATIONS`` (a
``csrgan.registry.DEGRADATIONS``). A numeric parameter is either a fixed value or a range ``[lo, hi]`` that is
sampled uniformly *per image*; a categorical parameter is a name or a list of names (one is drawn per
image). Every step also accepts ``prob`` (chance the step is applied, default 1).

The ops follow Real-ESRGAN's first-order degradation (Wang et al. 2021, ``basicsr/data/degradations.py``)
where one exists: bivariate Gaussian kernels, Gaussian noise with sigma in 0..255 units, Poisson noise
with a ``scale``, optional "gray" (channel-shared) noise, JPEG through a real codec. Differences on purpose:

* resize ``bicubic`` is the MATLAB-compatible antialiased bicubic (``csrgan.data.resize.imresize``), so a
  pipeline that is only ``resize to_scale=0.25 bicubic`` reproduces the standard bicubic LR bit for bit;
  ``bilinear``/``nearest`` are OpenCV-style (half-pixel centres, no antialiasing, as Real-ESRGAN's
  ``cv2.resize``) and ``area`` is an exact box average (OpenCV ``INTER_AREA`` for downscaling);
* Poisson noise counts photons at the 0..255 level (``Poisson(x) - x`` for ``x`` in 0..255, times
  ``scale``). Real-ESRGAN counts at ``2**ceil(log2(#unique values))`` levels, i.e. 256 for almost every
  8-bit photo, so the noise std ``scale * sqrt(x)`` is the same to within 0.2 %, but ours does not depend
  on how many distinct grey levels the image happens to contain;
* generalised-Gaussian, plateau and sinc kernels and the second-order pass are not implemented (yet).

Between steps the image is kept as float64 in 0..255 (no intermediate rounding), except that a
``bicubic`` resize of a still-uint8 image runs MATLAB's uint8 path. Noise is clipped to [0, 255] as in
Real-ESRGAN; the output is rounded half up and saturated to uint8 (MATLAB ``im2uint8``), as JPEG input is.

Randomness: ``pipeline(img, rng)`` draws one seed per step from ``rng`` and runs the step with its own
generator, so editing one step never changes what another step samples. Same ``rng`` state -> identical
output. The returned record lists what was sampled (JSON-safe), for the results table.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from PIL import Image

from csrgan.data.io import list_images, read_image, write_image
from csrgan.data.resize import imresize, modcrop
from csrgan.registry import DEGRADATIONS, RegistryError

__all__ = [
    "DEGRADATIONS",
    "DEFAULT_PIPELINE_RESOURCE",
    "Degradation",
    "DegradationConfigError",
    "DegradationPipeline",
    "default_pipeline",
    "degrade_exact",
    "degrade_folder",
    "gaussian_kernel",
    "load_pipeline",
    "motion_kernel",
]

#: Bumped whenever an op's math changes, so ``DegradationPipeline.id`` (recorded with every result)
#: never names two different behaviours.
ALGORITHM_VERSION = 1

DEFAULT_PIPELINE_RESOURCE = "default_degradation.yaml"

_REQUIRED = object()


class DegradationConfigError(ValueError):
    """An invalid pipeline config. The message names the step (index and type) and the parameter."""


class _ParamError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param

    def __reduce__(self):  # noqa: ANN204 - pickles with both arguments (the default passes only args)
        return (type(self), (self.param, str(self)))


# ------------------------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class Num:
    """A numeric parameter: a fixed value or a range ``[lo, hi]`` sampled uniformly per image.

    ``low``/``high`` bound the allowed values (``low_open``: strictly greater than ``low``). ``odd``
    integers (kernel sizes) are sampled uniformly among the odd values of the range.
    """

    default: Any = _REQUIRED
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False
    odd: bool = False
    ranged: bool = True
    doc: str = ""

    def parse(self, name: str, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if not self.ranged:
                raise _ParamError(name, f"must be a single number, got {value!r}")
            if len(value) != 2:
                raise _ParamError(name, f"a range must be [lo, hi], got {value!r}")
            lo, hi = (self._scalar(name, v) for v in value)
            if lo > hi:
                raise _ParamError(name, f"range [lo, hi] needs lo <= hi, got {list(value)!r}")
            if self.odd and not any(v % 2 == 1 for v in range(int(lo), int(hi) + 1)):
                raise _ParamError(name, f"range {list(value)!r} contains no odd value")
            return [lo, hi]
        v = self._scalar(name, value)
        if self.odd and v % 2 == 0:
            raise _ParamError(name, f"must be odd, got {v}")
        return v

    def _scalar(self, name: str, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _ParamError(name, f"must be a number{' or [lo, hi]' if self.ranged else ''}, got {value!r}")
        if not math.isfinite(value):
            raise _ParamError(name, f"must be finite, got {value!r}")
        if self.integer:
            if value != int(value):
                raise _ParamError(name, f"must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise _ParamError(name, f"must be {'>' if self.low_open else '>='} {self.low}, got {value!r}")
        if self.high is not None and value > self.high:
            raise _ParamError(name, f"must be <= {self.high}, got {value!r}")
        return value

    def sample(self, value: Any, rng: np.random.Generator) -> float | int:
        if not isinstance(value, list):
            return value
        lo, hi = value
        if self.odd:
            odds = [v for v in range(int(lo), int(hi) + 1) if v % 2 == 1]
            return int(odds[int(rng.integers(len(odds)))])
        if self.integer:
            return int(rng.integers(lo, hi + 1))
        return float(rng.uniform(lo, hi))


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one name, or a list of names of which one is drawn uniformly per image."""

    options: tuple[str, ...]
    default: Any = _REQUIRED
    doc: str = ""

    def parse(self, name: str, value: Any) -> Any:
        values = value if isinstance(value, list | tuple) else [value]
        if not values:
            raise _ParamError(name, "must name at least one option")
        for v in values:
            if v not in self.options:
                raise _ParamError(name, f"unknown value {v!r}; known: {', '.join(self.options)}")
        return list(values) if isinstance(value, list | tuple) else value

    def sample(self, value: Any, rng: np.random.Generator) -> str:
        if isinstance(value, list):
            return str(value[int(rng.integers(len(value)))])
        return str(value)


Param = Num | Choice
_PROB = Num(default=1.0, low=0.0, high=1.0, ranged=False, doc="probability the step is applied")


# ------------------------------------------------------------------------------------------ base class
@dataclass
class _Context:
    """What a step may need beyond its own parameters: the pipeline's input size (for ``to_scale``)."""

    input_hw: tuple[int, int]


class Degradation(ABC):
    """One step. Subclasses declare ``PARAMS`` and implement ``apply``; parsing/sampling is generic."""

    type_name: ClassVar[str]
    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(self, params: Mapping[str, Any]) -> None:
        known = {**self.PARAMS, "prob": _PROB}
        unknown = sorted(set(params) - set(known))
        if unknown:
            known_list = ", ".join(sorted(known))
            raise _ParamError(unknown[0], f"is not a parameter of this step; known: {known_list}")
        self.config: dict[str, Any] = {}
        for name, spec in known.items():
            if name in params and params[name] is not None:
                self.config[name] = spec.parse(name, params[name])
            elif spec.default is _REQUIRED:
                raise _ParamError(name, "is required")
            else:
                self.config[name] = spec.default
        self.validate()

    def validate(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Cross-parameter checks (raise ``_ParamError``)."""

    def to_config(self) -> dict[str, Any]:
        return {"type": self.type_name, **self.config}

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Concrete values for one image (ranges/choices drawn), in ``PARAMS`` order."""
        out: dict[str, Any] = {}
        for name, spec in self.PARAMS.items():
            value = self.config[name]
            out[name] = None if value is None else spec.sample(value, rng)
        return out

    def run(self, img: np.ndarray, rng: np.random.Generator, ctx: _Context) -> tuple[np.ndarray, dict]:
        applied = bool(self.config["prob"] >= 1.0 or rng.random() < self.config["prob"])
        if not applied:
            return img, {"type": self.type_name, "applied": False}
        params = self.sample(rng)
        img, extra = self.apply(img, params, rng, ctx)
        return img, {"type": self.type_name, "applied": True, **params, **extra}

    @abstractmethod
    def apply(
        self, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator, ctx: _Context
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Degrade ``img`` (uint8, or float64 0..255) with concrete ``params``; return (img, extra record)."""


def _float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) if img.dtype != np.float64 else img


def _quantise(img: np.ndarray) -> np.ndarray:
    """float 0..255 -> uint8, rounding half up and saturating (MATLAB ``im2uint8``)."""
    if img.dtype == np.uint8:
        return img
    return np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8)


def _convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each channel with ``kernel`` (odd square), reflect-101 borders like ``cv2.filter2D``.

    Computed in float64 with FFTs: exact to ~1e-12 and fast for the 21x21 kernels of the default
    pipeline (a direct float64 ``conv2d`` on CPU takes seconds per 512^2 image).
    """
    k = kernel.shape[0]
    pad = k // 2
    x = np.pad(_float(img), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")  # == cv2 BORDER_REFLECT_101
    hp, wp = x.shape[:2]
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float64)  # correlation = conv with flip
    spec = np.fft.rfft2(x, axes=(0, 1)) * np.fft.rfft2(flipped, s=(hp, wp))[..., None]
    full = np.fft.irfft2(spec, s=(hp, wp), axes=(0, 1))
    return np.ascontiguousarray(full[k - 1 :, k - 1 :])


# ---------------------------------------------------------------------------------------------- blur
def gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: float, theta_deg: float = 0.0) -> np.ndarray:
    """Bivariate Gaussian kernel (Real-ESRGAN ``bivariate_Gaussian``), normalised to sum to 1.

    ``sigma_x``/``sigma_y`` are the std along the kernel's own axes, rotated counter-clockwise by
    ``theta_deg`` degrees (x = columns, y = rows pointing down, so "counter-clockwise" is on screen).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be > 0, got {sigma_x}, {sigma_y}")
    theta = math.radians(theta_deg)
    # Screen rotation: a unit vector at angle theta is (cos, -sin) in (col, row) coordinates.
    u = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    cov = u @ np.diag([sigma_x**2, sigma_y**2]) @ u.T
    r = np.arange(kernel_size, dtype=np.float64) - kernel_size // 2
    xx, yy = np.meshgrid(r, r)  # xx: column offset, yy: row offset
    xy = np.stack([xx, yy], axis=-1)
    inv = np.linalg.inv(cov)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", xy, inv, xy))
    return k / k.sum()


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Linear motion blur: a segment of ``length`` pixels through the centre at ``angle_deg`` (0 = horizontal,
    counter-clockwise on screen), rasterised with bilinear splatting of dense samples; sums to 1.

    Length 0 is the identity (a 1x1 kernel). The kernel is point-symmetric, so filtering (correlation)
    equals convolution.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    half = math.ceil(length / 2)
    size = 2 * half + 1
    k = np.zeros((size, size), dtype=np.float64)
    n = max(int(math.ceil(length * 8)), 1) + 1
    t = np.linspace(-length / 2, length / 2, n)
    theta = math.radians(angle_deg)
    cols = half + t * math.cos(theta)
    rows = half - t * math.sin(theta)
    c0, r0 = np.floor(cols).astype(int), np.floor(rows).astype(int)
    fc, fr = cols - c0, rows - r0
    for dr, dc, w in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        rr, cc = np.clip(r0 + dr, 0, size - 1), np.clip(c0 + dc, 0, size - 1)
        np.add.at(k, (rr, cc), w)
    return k / k.sum()


@DEGRADATIONS.register("gaussian_blur")
class GaussianBlur(Degradation):
    """Isotropic or anisotropic Gaussian blur. ``isotropic_prob``: chance that ``sigma_y = sigma_x`` and
    ``theta = 0`` for an image (Real-ESRGAN draws iso/aniso kernels); default: isotropic unless
    ``sigma_y`` is given."""

    type_name = "gaussian_blur"
    PARAMS: ClassVar[dict[str, Param]] = {
        "kernel_size": Num(default=21, low=1, integer=True, odd=True),
        "sigma_x": Num(low=0.0, low_open=True),
        "sigma_y": Num(default=None, low=0.0, low_open=True),
        "theta": Num(default=0.0, low=-360.0, high=360.0, doc="degrees"),
        "isotropic_prob": Num(default=None, low=0.0, high=1.0, ranged=False),
    }

    def validate(self) -> None:  # noqa: B027 - optional hook, not abstract
        if self.config["isotropic_prob"] is None:
            self.config["isotropic_prob"] = 1.0 if self.config["sigma_y"] is None else 0.0
        elif self.config["isotropic_prob"] < 1.0 and self.config["sigma_y"] is None:
            raise _ParamError("sigma_y", "is required when isotropic_prob < 1 (anisotropic kernels)")

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        p = super().sample(rng)
        isotropic = bool(rng.random() < p.pop("isotropic_prob"))
        if isotropic:
            p["sigma_y"], p["theta"] = p["sigma_x"], 0.0
        p["isotropic"] = isotropic
        return p

    def apply(
        self, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator, ctx: _Context
    ) -> tuple[np.ndarray, dict[str, Any]]:
        k = gaussian_kernel(params["kernel_size"], params["sigma_x"], params["sigma_y"], params["theta"])
        return _convolve(img, k), {}


@DEGRADATIONS.register("motion_blur")
class MotionBlur(Degradation):
    """Linear camera-shake blur of ``length`` pixels at ``angle`` degrees."""

    type_name = "motion_blur"
    PARAMS: ClassVar[dict[str, Param]] = {
        "length": Num(low=0.0),
        "angle": Num(default=[0.0, 180.0], low=-360.0, high=360.0, doc="degrees"),
    }

    def apply(
        self, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator, ctx: _Context
    ) -> tuple[np.ndarray, dict[str, Any]]:
        k = motion_kernel(params["length"], params["angle"])
        return _convolve(img, k), {"kernel_size": int(k.shape[0])}


# --------------------------------------------------------------------------------------------- noise
def _luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luma, 0..255 float (what ``cv2.cvtColor(RGB2GRAY)`` computes)."""
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


class _Noise(Degradation):
    """Noise with a ``gray_prob``: the chance that one noise field is shared by all three channels."""

    GRAY_PROB: ClassVar[Param] = Num(default=0.0, low=0.0, high=1.0, ranged=False)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        p = super().sample(rng)
        p["gray"] = bool(rng.random() < p.pop("gray_prob"))
        return p


@DEGRADATIONS.register("gaussian_noise")
class GaussianNoise(_Noise):
    """Additive white Gaussian noise, ``sigma`` in 0..255 units; ``gray_prob``: chance the same noise is
    added to all three channels (Real-ESRGAN's gray noise). Clipped to [0, 255]."""

    type_name = "gaussian_noise"
    PARAMS: ClassVar[dict[str, Param]] = {"sigma": Num(low=0.0), "gray_prob": _Noise.GRAY_PROB}

    def apply(
        self, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator, ctx: _Context
    ) -> tuple[np.ndarray, dict[str, Any]]:
        x = _float(img)
        shape = (*x.shape[:2], 1) if params["gray"] else x.shape
        noise = rng.normal(0.0, params["sigma"], size=shape)
        return np.clip(x + noise, 0.0, 255.0), {}


@DEGRADATIONS.register("poisson_noise")
class PoissonNoise(_Noise):
    """Signal-dependent (shot) noise: ``scale * (Poisson(x) - x)`` for ``x`` in 0..255, i.e. std
    ``scale * sqrt(x)`` grey levels. ``gray_prob`` as for Gaussian noise (noise from the luma)."""

    type_name = "poisson_noise"
    PARAMS: ClassVar[dict[str, Param]] = {"scale": Num(low=0.0), "gray_prob": _Noise.GRAY_PROB}

    def apply(
        self, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator, ctx: _Context
    ) -> tuple[np.ndarray, dict[str, Any]]:
        x = np.clip(_float(img), 0.0, 255.0)
        lam = _luma(x)[..., None] if params["gray"] else x
        noise = rng.poisson(lam).astype(np.float64) - lam
        return np.clip(x + params["scale"] * noise, 0.0, 255.0), {}


# ---------------------------------------------------------------------------------------------- jpeg
@DEGRADATIONS.register("jpeg")
class JPEG(Degradation):
    """JPEG compression through Pillow (libjpeg, default 4:2:0 chroma subsampling) at ``quality``."""

    type_name = "jpeg"
    PARAMS: ClassVar[dict[str, Param]] = {"quality": Num(low=1, high=100, integer=True)}

    def apply(
        self, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator, ctx: _Context
    ) -> tuple[np.ndarray, dict[str, Any]]:
        buf = io.BytesIO()
        Image.fromarray(_quantise(img)).save(buf, format="JPEG", quality=int(params["quality"]))
        buf.seek(0)
        with Image.open(buf) as im:
            out = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        return out, {}


# -------------------------------------------------------------------------------------------- resize
def _linear_matrix(in_len: int, out_len: int) -> np.ndarray:
    """OpenCV ``INTER_LINEAR`` along one axis: half-pixel centres, edge clamped, no antialiasing."""
    x = (np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5
    x = np.clip(x, 0.0, in_len - 1)
    x0 = np.floor(x).astype(int)
    x1 = np.minimum(x0 + 1, in_len - 1)
    w = x - x0
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.arange(out_len), x0), 1.0 - w)
    np.add.at(m, (np.arange(out_len), x1), w)
    return m


def _area_matrix(in_len: int, out_len: int) -> np.ndarray:
    """Exact box average: output pixel ``i`` averages input ``[i, i+1) * in/out`` by overlap length."""
    edges = np.arange(out_len + 1) * (in_len / out_len)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(in_len)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _nearest_matrix(in_len: int, out_len: int) -> np.ndarray:
    src = np.minimum(np.floor((np.arange(out_len) + 0.5) * in_len / out_len).astype(int), in_len - 1)
    m = np.zeros((out_len, in_len))
    m[np.arange(out_len), src] = 1.0
    return m


_MATRICES = {"bilinear": _linear_matrix, "area": _area_matrix, "nearest": _nearest_matrix}


def _resize(img: np.ndarray, out_hw: tuple[int, int], interpolation: str) -> np.ndarray:
    if interpolation == "bicubic":  # MATLAB imresize; uint8 stays uint8 (MATLAB's per-pass rounding)
        return imresize(img, output_shape=out_hw)
    make = _MATRICES[interpolation]
    x = _float(img)
    my, mx = make(x.shape[0], out_hw[0]), make(x.shape[1], out_hw[1])
    return np.einsum("oh,hwc,pw->opc", my, x, mx, optimize=True)


@DEGRADATIONS.register("resize")
class Resize(Degradation):
    """Resize by ``scale`` (relative to the current image) or to ``to_scale`` x the pipeline's *input*
    size (Real-ESRGAN's final "resize back to HR/4", exact whatever random resizes came before).
    Output side: ``round(side * factor)``, at least 1."""

    type_name = "resize"
    PARAMS: ClassVar[dict[str, Param]] = {
        "scale": Num(default=None, low=0.0, low_open=True),
        "to_scale": Num(default=None, low=0.0, low_open=True),
        "interpolation": Choice(("bicubic", "bilinear", "area", "nearest"), default="bicubic"),
    }

    def validate(self) -> None:  # noqa: B027 - optional hook, not abstract
        if (self.config["scale"] is None) == (self.config["to_scale"] is None):
            raise _ParamError("scale", "give exactly one of `scale` or `to_scale`")

    def apply(
        self, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator, ctx: _Context
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if params["scale"] is not None:
            base, factor = img.shape[:2], params["scale"]
        else:
            base, factor = ctx.input_hw, params["to_scale"]
        out_hw = (max(1, math.floor(base[0] * factor + 0.5)), max(1, math.floor(base[1] * factor + 0.5)))
        return _resize(img, out_hw, params["interpolation"]), {"size": [int(out_hw[0]), int(out_hw[1])]}


# -------------------------------------------------------------------------------------------- one_of
@DEGRADATIONS.register("one_of")
class OneOf(Degradation):
    """Apply exactly one of ``options`` (each a step), drawn with ``weights`` (default: equal), e.g.
    Real-ESRGAN's "Gaussian noise or Poisson noise"."""

    type_name = "one_of"
    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(self, params: Mapping[str, Any]) -> None:
        unknown = sorted(set(params) - {"options", "weights", "prob"})
        if unknown:
            raise _ParamError(unknown[0], "is not a parameter of this step; known: options, prob, weights")
        options = params.get("options")
        if not isinstance(options, list) or not options:
            raise _ParamError("options", f"must be a non-empty list of steps, got {options!r}")
        self.options = [_build_step(s, f"options[{i}]") for i, s in enumerate(options)]
        weights = params.get("weights")
        if weights is None:
            weights = [1.0] * len(options)
        if (
            not isinstance(weights, list)
            or len(weights) != len(options)
            or any(isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0 for w in weights)
            or sum(weights) <= 0
        ):
            raise _ParamError(
                "weights", f"must be {len(options)} non-negative numbers with a positive sum, got {weights!r}"
            )
        self.weights = [float(w) for w in weights]
        self.config = {"prob": _PROB.parse("prob", params.get("prob", 1.0))}

    def to_config(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "options": [o.to_config() for o in self.options],
            "weights": self.weights,
            "prob": self.config["prob"],
        }

    def run(self, img: np.ndarray, rng: np.random.Generator, ctx: _Context) -> tuple[np.ndarray, dict]:
        applied = bool(self.config["prob"] >= 1.0 or rng.random() < self.config["prob"])
        if not applied:
            return img, {"type": self.type_name, "applied": False}
        p = np.asarray(self.weights) / sum(self.weights)
        chosen = int(rng.choice(len(self.options), p=p))
        img, record = self.options[chosen].run(img, rng, ctx)
        return img, {"type": self.type_name, "applied": True, "chosen": chosen, "step": record}

    def apply(
        self, img: np.ndarray, params: dict[str, Any], rng: np.random.Generator, ctx: _Context
    ) -> tuple[np.ndarray, dict[str, Any]]:  # pragma: no cover - run() is overridden
        raise NotImplementedError("one_of runs one of its options")


# ------------------------------------------------------------------------------------------ pipeline
def _build_step(step: Any, where: str) -> Degradation:
    if not isinstance(step, Mapping):
        raise DegradationConfigError(f"{where}: a step must be a mapping with a `type`, got {step!r}")
    if "type" not in step:
        raise DegradationConfigError(f"{where}: missing `type`; known: {', '.join(DEGRADATIONS.names())}")
    kind = step["type"]
    try:
        cls = DEGRADATIONS.get(kind)
    except RegistryError as exc:
        raise DegradationConfigError(f"{where}: {exc}") from None
    params = {k: v for k, v in step.items() if k != "type"}
    try:
        return cls(params)
    except _ParamError as exc:
        raise DegradationConfigError(f"{where} ({kind}), parameter {exc.param!r}: {exc}") from None
    except DegradationConfigError as exc:  # nested (one_of options)
        raise DegradationConfigError(f"{where} ({kind}).{exc}") from None


@dataclass
class DegradationPipeline:
    """An ordered list of degradation steps; ``pipeline(img_uint8, rng) -> (img_uint8, record)``."""

    steps: list[Degradation] = field(default_factory=list)

    @classmethod
    def from_config(cls, steps: Any) -> DegradationPipeline:
        """Validate and build from a list of ``{type: ..., **params}`` (or a mapping with ``steps:``)."""
        if isinstance(steps, Mapping):
            extra = sorted(set(steps) - {"steps", "description"})
            if extra:
                raise DegradationConfigError(
                    f"pipeline: unknown key {extra[0]!r}; expected `steps` (and optional `description`)"
                )
            if "steps" not in steps:
                raise DegradationConfigError("pipeline: missing `steps` (a list of steps)")
            steps = steps["steps"]
        if not isinstance(steps, list):
            raise DegradationConfigError(
                f"pipeline: `steps` must be a list of steps, got {type(steps).__name__}"
            )
        return cls([_build_step(s, f"step {i}") for i, s in enumerate(steps)])

    def to_config(self) -> list[dict[str, Any]]:
        """The normalised config (defaults filled in, numbers typed); ``from_config`` of it is equal."""
        return [s.to_config() for s in self.steps]

    @property
    def id(self) -> str:
        """Stable 16-hex-digit hash of the normalised config and ``ALGORITHM_VERSION``."""
        blob = json.dumps(
            {"algorithm_version": ALGORITHM_VERSION, "steps": self.to_config()},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise TypeError(f"degradation pipeline expects a uint8 (H, W, 3) array, got {desc}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        ctx = _Context(input_hw=(int(img.shape[0]), int(img.shape[1])))
        seeds = rng.integers(0, 2**63 - 1, size=len(self.steps))
        x: np.ndarray = img
        records: list[dict[str, Any]] = []
        for step, seed in zip(self.steps, seeds, strict=True):
            x, rec = step.run(x, np.random.default_rng(int(seed)), ctx)
            records.append(rec)
        return _quantise(x), records

    def __len__(self) -> int:
        return len(self.steps)


def load_pipeline(path: str | Path) -> DegradationPipeline:
    """Read a pipeline YAML (a list of steps, or a mapping with ``steps:``). Errors name the file."""
    from csrgan.yaml_io import YAMLInputError, load_yaml_file

    path = Path(path)
    if not path.is_file():
        raise DegradationConfigError(f"cannot read degradation pipeline {path}: no such file")
    try:
        data = load_yaml_file(path)
    except YAMLInputError as exc:
        raise DegradationConfigError(str(exc)) from None
    try:
        return DegradationPipeline.from_config(data)
    except DegradationConfigError as exc:
        raise DegradationConfigError(f"{path}: {exc}") from None


def default_pipeline() -> DegradationPipeline:
    """The packaged default (``csrgan/data/default_degradation.yaml``): blur -> x4 down -> noise -> JPEG."""
    text = resources.files("csrgan.data").joinpath(DEFAULT_PIPELINE_RESOURCE).read_text()
    return DegradationPipeline.from_config(yaml.safe_load(text))


def degrade_exact(
    pipeline: DegradationPipeline, hr: np.ndarray, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Degrade an HR whose sides are multiples of ``scale`` and check the LR is exactly ``HR / scale``
    (so LR pixel (i, j) covers HR block (i, j), as every paired loader assumes)."""
    lr, record = pipeline(hr, rng)
    want = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != want:
        raise ValueError(
            f"degradation pipeline {pipeline.id} turned a {hr.shape[1]}x{hr.shape[0]} HR into a "
            f"{lr.shape[1]}x{lr.shape[0]} LR, not {want[1]}x{want[0]} (HR / {scale}); "
            f"end it with a `resize` step with `to_scale: {1 / scale:g}`"
        )
    return lr, record


def _name_seed(seed: int, name: str) -> np.random.Generator:
    """Per-file stream keyed by the file name, so adding or removing files never changes the others."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")])


def degrade_folder(
    hr_dir: str | Path,
    out_dir: str | Path,
    pipeline: DegradationPipeline,
    scale: int = 4,
    seed: int = 0,
    records_name: str = "degradations.jsonl",
) -> list[dict[str, Any]]:
    """Write ``pipeline(modcrop(HR, scale))`` for every image of ``hr_dir`` to ``out_dir`` (PNG, same stem)
    and one JSON line per image (``file``, ``hr_size``, ``lr_size``, ``seed``, ``pipeline_id``, ``steps``)
    to ``out_dir/records_name``. Returns the records."""
    hr_paths = list_images(hr_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in hr_paths:
        try:
            hr = modcrop(read_image(path), scale)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        lr, steps = degrade_exact(pipeline, hr, scale, _name_seed(seed, path.name))
        write_image(out / f"{path.stem}.png", lr)
        records.append(
            {
                "file": f"{path.stem}.png",
                "hr_file": path.name,
                "hr_size": [int(hr.shape[0]), int(hr.shape[1])],
                "lr_size": [int(lr.shape[0]), int(lr.shape[1])],
                "seed": seed,
                "pipeline_id": pipeline.id,
                "steps": steps,
            }
        )
    (out / records_name).write_text("".join(json.dumps(r) + "\n" for r in records))
    return records
