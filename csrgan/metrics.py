"""The SR evaluation protocol (PSNR / SSIM / LPIPS), written down in one place: :data:`PROTOCOL`.

Published SR tables (bicubic x4: Set5 28.42 / 0.8104, Set14 26.00 / 0.7027, B100 25.96 / 0.6675) come
from MATLAB scripts (``rgb2ycbcr`` + Wang's ``ssim_index``). Small, invisible choices move these
numbers by more than the gaps papers report, so every choice is a named constant here, and
``PROTOCOL.id`` is stored with every result. docs/metrics.md explains each choice and lists the
numbers we measured against the published ones.

* SR is quantised to uint8 *before* scoring (``csrgan.data.io.to_uint8``); the functions here take
  uint8 images only.
* Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (BT.601, as MATLAB ``rgb2ycbcr``), then rounded to
  an integer as MATLAB does for uint8 input. A single-channel image ``(H, W)`` is used unchanged as
  luma, as the MATLAB scripts do with grayscale files (Set14 ``bridge``); a 3-channel image with
  R = G = B is an RGB image like any other (Set14 ``man``) and goes through the Y formula.
* ``crop_border = scale`` pixels are removed from every side before any metric.
* PSNR on the [0, 255] Y; identical images give ``inf`` (not a large finite number).
* SSIM: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, population (co)variances,
  mean over the 'valid' part of the SSIM map (Wang et al. 2004 / MATLAB ``ssim_index``), via
  scikit-image; tests check it against a direct implementation.
* LPIPS (AlexNet, v0.1) on the full RGB uint8-rounded images, cropped by the same border.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from csrgan.registry import METRICS

if TYPE_CHECKING:  # torch and scikit-image are imported where they are used: this module stays light
    import torch

__all__ = [
    "PROTOCOL",
    "METRICS",
    "METRIC_NAMES",
    "NOREF_METRIC_NAMES",
    "Metric",
    "MetricProtocol",
    "LPIPSMetric",
    "rgb_to_y",
    "psnr",
    "ssim",
    "evaluate_image",
    "gray_pair",
]


@dataclass(frozen=True)
class MetricProtocol:
    """Every constant of the evaluation protocol. Change any of them -> change ``id``."""

    id: str
    # luma
    y_coefficients: tuple[float, float, float]
    y_offset: float
    y_rounding: str
    gray_rule: str
    # common
    sr_quantisation: str
    crop_rule: str
    data_range: float
    # SSIM
    ssim_window: int
    ssim_sigma: float
    ssim_k1: float
    ssim_k2: float
    ssim_covariance: str
    ssim_pooling: str
    # LPIPS
    lpips_net: str
    lpips_version: str
    lpips_input: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for storing next to results)."""
        return asdict(self)


PROTOCOL = MetricProtocol(
    id="sr-y601-u8-crop=scale-ssim11g-lpips=alex0.1-v1",
    y_coefficients=(65.481, 128.553, 24.966),
    y_offset=16.0,
    y_rounding="round half up to integer (MATLAB rgb2ycbcr on uint8)",
    gray_rule=(
        "(H, W) input is luma, used unchanged; (H, W, 3) always goes through the Y formula; an HR read "
        "from a single-channel file is scored as grey (gray_pair: SR reduced by the channel mean)"
    ),
    sr_quantisation="SR rounded half up to uint8 before any metric (csrgan.data.io.to_uint8)",
    crop_rule="crop_border = scale pixels removed from every side",
    data_range=255.0,
    ssim_window=11,
    ssim_sigma=1.5,
    ssim_k1=0.01,
    ssim_k2=0.03,
    ssim_covariance="population (use_sample_covariance=False)",
    ssim_pooling="mean of the valid part of the SSIM map",
    lpips_net="alex",
    lpips_version="0.1",
    lpips_input="full RGB uint8-rounded images, cropped by crop_border, mapped to [-1, 1]",
)

# scikit-image sizes its Gaussian window as 2 * int(truncate * sigma + 0.5) + 1; this truncate gives
# exactly PROTOCOL.ssim_window (asserted below so a constant change cannot silently change the window).
_SSIM_TRUNCATE = 3.5
if 2 * int(_SSIM_TRUNCATE * PROTOCOL.ssim_sigma + 0.5) + 1 != PROTOCOL.ssim_window:  # pragma: no cover
    raise RuntimeError("metrics: _SSIM_TRUNCATE no longer gives PROTOCOL.ssim_window; update it")


# --------------------------------------------------------------------------------------------------
# Luma and cropping
# --------------------------------------------------------------------------------------------------
def _check_uint8_image(img: np.ndarray, what: str) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{what}: expected a numpy uint8 image, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise TypeError(
            f"{what}: expected uint8 (the protocol scores uint8-rounded images; quantise SR with "
            f"csrgan.data.io.to_uint8), got {img.dtype}"
        )
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise ValueError(f"{what}: expected (H, W, 3) RGB or (H, W) grayscale, got shape {img.shape}")


def rgb_to_y(img_uint8: np.ndarray) -> np.ndarray:
    """Luma of a uint8 image as float64 integers: in [16, 235] for RGB ``(H, W, 3)``.

    ``(H, W)`` or ``(H, W, 1)`` images are luma already and returned unchanged (as float64, range
    [0, 255]); see ``PROTOCOL.gray_rule``. Rounding is half up, like MATLAB ``rgb2ycbcr`` on uint8.
    """
    _check_uint8_image(img_uint8, "rgb_to_y")
    if img_uint8.ndim == 2:
        return img_uint8.astype(np.float64)
    if img_uint8.shape[2] == 1:
        return img_uint8[..., 0].astype(np.float64)
    rgb = img_uint8.astype(np.float64)
    cr, cg, cb = PROTOCOL.y_coefficients
    y = PROTOCOL.y_offset + (cr * rgb[..., 0] + cg * rgb[..., 1] + cb * rgb[..., 2]) / 255.0
    return np.floor(y + 0.5)


def _crop(img: np.ndarray, crop_border: int) -> np.ndarray:
    if crop_border == 0:
        return img
    return img[crop_border:-crop_border, crop_border:-crop_border, ...]


def _y_pair(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated, cropped luma of SR and HR."""
    _check_uint8_image(sr, "sr")
    _check_uint8_image(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {sr.shape} vs {hr.shape}")
    if not isinstance(crop_border, int | np.integer) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
    if min(sr.shape[:2]) <= 2 * crop_border:
        raise ValueError(f"image {sr.shape[:2]} is too small for crop_border={crop_border}")
    return _crop(rgb_to_y(sr), int(crop_border)), _crop(rgb_to_y(hr), int(crop_border))


# --------------------------------------------------------------------------------------------------
# PSNR / SSIM
# --------------------------------------------------------------------------------------------------
def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """PSNR (dB) on the protocol's Y channel. Identical (cropped) images give ``math.inf``."""
    y_sr, y_hr = _y_pair(sr, hr, crop_border)
    if np.array_equal(y_sr, y_hr):
        return math.inf
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(y_hr, y_sr, data_range=PROTOCOL.data_range))


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """SSIM (Wang et al. 2004, MATLAB ``ssim_index`` settings) on the protocol's Y channel."""
    y_sr, y_hr = _y_pair(sr, hr, crop_border)
    if min(y_sr.shape) < PROTOCOL.ssim_window:
        raise ValueError(
            f"SSIM needs at least {PROTOCOL.ssim_window}x{PROTOCOL.ssim_window} pixels after cropping "
            f"{crop_border} px, got {y_sr.shape}"
        )
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            y_sr,
            y_hr,
            data_range=PROTOCOL.data_range,
            gaussian_weights=True,
            sigma=PROTOCOL.ssim_sigma,
            truncate=_SSIM_TRUNCATE,
            use_sample_covariance=False,
            K1=PROTOCOL.ssim_k1,
            K2=PROTOCOL.ssim_k2,
        )
    )


# --------------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------------
class LPIPSMetric:
    """LPIPS distance (lower is better) between float images in [0, 1], one value per image.

    Wraps the ``lpips.LPIPS`` model from :func:`csrgan.weights.load_lpips` (AlexNet backbone, v0.1
    linear layers) in eval mode, without gradients. ``source`` is passed on (backbone checkpoint
    path); ``random_backbone=True`` must be asked for explicitly and shows in :attr:`provenance`.
    Inputs are ``(N, 3, H, W)`` and processed ``batch_size`` images at a time; the result is a float32
    CPU tensor ``(N,)``.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        source: str | None = None,
        random_backbone: bool = False,
        batch_size: int = 16,
    ) -> None:
        import torch

        from csrgan import weights  # deferred: loading torchvision's model table is not free

        if batch_size < 1:
            raise ValueError(f"LPIPSMetric: batch_size must be >= 1, got {batch_size}")
        model, provenance = weights.load_lpips(
            net=PROTOCOL.lpips_net, source=source, random_backbone=random_backbone
        )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.provenance: str = provenance
        self.batch_size = batch_size
        try:
            self.lpips_package_version = importlib.metadata.version("lpips")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - lpips is a dependency
            self.lpips_package_version = "unknown"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch

        for name, t in (("x", x), ("y", y)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"LPIPSMetric: {name} must be a float tensor in [0, 1]")
            if t.ndim != 4 or t.shape[1] != 3:
                raise ValueError(f"LPIPSMetric: {name} must be (N, 3, H, W), got {tuple(t.shape)}")
            lo, hi = float(t.min()), float(t.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"LPIPSMetric: {name} values must be in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                    f"(clamp, or score uint8-rounded images as the protocol says)"
                )
        if x.shape != y.shape:
            raise ValueError(f"LPIPSMetric: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                xb = x[i : i + self.batch_size].to(self.device, torch.float32) * 2.0 - 1.0
                yb = y[i : i + self.batch_size].to(self.device, torch.float32) * 2.0 - 1.0
                out.append(self.model(xb, yb, normalize=False).reshape(-1).float().cpu())
        return torch.cat(out)


def _to_rgb_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W[, 1|3]) -> float32 (1, 3, H, W) in [0, 1]; grayscale is repeated to 3 channels."""
    import torch

    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)


# --------------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------------
def gray_pair(sr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SR and HR as 2-D grey images, for an HR that was a single-channel file (``PROTOCOL.gray_rule``).

    The HR's grey value is its luma (the MATLAB scripts never call ``rgb2ycbcr`` on a 1-channel file);
    an RGB SR is reduced to grey by the channel mean, rounded half up. For bicubic of a grey image all
    channels are equal, so this is exactly the MATLAB grey pipeline (Set14 ``bridge``).
    """
    hr2 = hr if hr.ndim == 2 else hr[..., 0]
    if sr.ndim == 2:
        return sr, hr2
    return np.floor(sr.astype(np.float64).mean(axis=2) + 0.5).astype(np.uint8), hr2


# --------------------------------------------------------------------------------------------------
# The metric registry
# --------------------------------------------------------------------------------------------------
#: ``fn(sr, hr, crop, lpips, gray)`` -> value, for uint8 SR/HR of one image.
MetricFn = Callable[[np.ndarray, np.ndarray, int, "LPIPSMetric | None", bool], float]


@dataclass(frozen=True)
class Metric:
    """What csrgan knows about one metric: how to compute it and how to read it.

    ``higher_is_better`` orders results (summaries, ``search.metric`` goals); ``decimals`` is how
    tables print it; ``needs_network`` marks metrics that load pretrained weights (LPIPS).
    ``reference=False`` marks a no-reference metric (NIQE): it scores the SR image alone, so it is
    computed by :mod:`csrgan.noref` (which loads its model parameters), never by ``fn``.
    """

    name: str
    higher_is_better: bool
    decimals: int
    needs_network: bool
    fn: MetricFn
    reference: bool = True


def _psnr_fn(sr: np.ndarray, hr: np.ndarray, crop: int, lpips: LPIPSMetric | None, gray: bool) -> float:
    return psnr(*(gray_pair(sr, hr) if gray else (sr, hr)), crop)


def _ssim_fn(sr: np.ndarray, hr: np.ndarray, crop: int, lpips: LPIPSMetric | None, gray: bool) -> float:
    return ssim(*(gray_pair(sr, hr) if gray else (sr, hr)), crop)


def _lpips_fn(sr: np.ndarray, hr: np.ndarray, crop: int, lpips: LPIPSMetric | None, gray: bool) -> float:
    if lpips is None:
        raise ValueError("metric 'lpips' requested but no LPIPSMetric given (pass lpips=LPIPSMetric(...))")
    _y_pair(sr, hr, crop)  # same validation as PSNR/SSIM
    return float(lpips(_to_rgb_tensor(_crop(sr, crop)), _to_rgb_tensor(_crop(hr, crop)))[0])


def _no_reference_fn(name: str) -> MetricFn:
    def fn(sr: np.ndarray, hr: np.ndarray, crop: int, lpips: LPIPSMetric | None, gray: bool) -> float:
        raise ValueError(f"{name!r} is a no-reference metric: score the SR image with csrgan.noref")

    return fn


_BUILT_IN = (
    Metric("psnr", higher_is_better=True, decimals=2, needs_network=False, fn=_psnr_fn),
    Metric("ssim", higher_is_better=True, decimals=4, needs_network=False, fn=_ssim_fn),
    Metric("lpips", higher_is_better=False, decimals=4, needs_network=True, fn=_lpips_fn),
)
#: No-reference metrics (:mod:`csrgan.noref`): valid in ``eval.metrics``, a test set's ``noref_metrics``
#: and ``csrgan evaluate --metrics``; they score sets without HR.
_NO_REFERENCE = (
    Metric(
        "niqe", higher_is_better=False, decimals=3, needs_network=False, fn=_no_reference_fn("niqe"),
        reference=False,
    ),
)  # fmt: skip
for _metric in (*_BUILT_IN, *_NO_REFERENCE):
    METRICS.add(_metric.name, _metric)
#: The built-in full-reference metric names, in the order tables show them (the results' metric columns).
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in _BUILT_IN)
#: The no-reference metric names (not yet result columns: see docs/metrics.md, "No-reference metrics").
NOREF_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in _NO_REFERENCE)


def evaluate_image(
    sr: np.ndarray,
    hr: np.ndarray,
    scale: int,
    metrics: Sequence[str] = ("psnr", "ssim"),
    lpips: LPIPSMetric | None = None,
    gray: bool = False,
) -> dict[str, float]:
    """Score one uint8 SR image against its uint8 HR with the protocol (``crop_border = scale``).

    Returns ``{name: value}`` for the requested ``metrics`` (any of ``psnr``, ``ssim``, ``lpips``).
    ``lpips`` needs an :class:`LPIPSMetric`; it is computed on the full RGB images (grayscale repeated
    to 3 channels), cropped by the same border as PSNR/SSIM. ``gray=True`` says the HR came from a
    single-channel file: PSNR/SSIM then use :func:`gray_pair` instead of the Y formula.
    """
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a sequence of names, e.g. ({metrics!r},), not a string")
    chosen = [METRICS.get(m) for m in metrics]  # unknown names: RegistryError listing the known ones
    no_ref = [m.name for m in chosen if not m.reference]
    if no_ref:
        raise ValueError(f"evaluate_image scores SR against HR; {no_ref} are no-reference: use csrgan.noref")
    if not isinstance(scale, int | np.integer) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    if any(m.needs_network for m in chosen) and lpips is None:
        raise ValueError("metric 'lpips' requested but no LPIPSMetric given (pass lpips=LPIPSMetric(...))")
    crop = int(scale)  # PROTOCOL.crop_rule
    return {m.name: m.fn(sr, hr, crop, lpips, gray) for m in chosen}
