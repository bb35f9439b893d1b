"""Spec for csrgan.metrics: the SR evaluation protocol.

The acceptance tests reproduce the published bicubic x4 baselines (EDSR/RCAN/ESRGAN tables, Y channel,
border = scale): Set5 28.42 / 0.8104, Set14 26.00 / 0.7027, BSD100 25.96 / 0.6675.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import correlate2d

from csrgan import registry
from csrgan.data.io import read_image
from csrgan.data.resize import imresize, modcrop
from csrgan.metrics import (
    METRIC_NAMES,
    METRICS,
    PROTOCOL,
    LPIPSMetric,
    Metric,
    evaluate_image,
    psnr,
    rgb_to_y,
    ssim,
)
from csrgan.registry import RegistryError

PUBLISHED = {"Set5": (28.42, 0.8104), "Set14": (26.00, 0.7027), "BSD100": (25.96, 0.6675)}
PSNR_TOL, SSIM_TOL = 0.02, 0.002


def _load(path: Path) -> np.ndarray:
    """Benchmark image as the MATLAB scripts see it: single-channel files stay 2-D (Set14 bridge)."""
    with Image.open(path) as im:
        if im.mode == "L":
            return np.asarray(im, dtype=np.uint8).copy()
    return read_image(path)


def _pairs_from_shipped_lr(root: Path, name: str) -> list[tuple[Path, Path]]:
    if name == "Set5":
        hr = sorted((root / "Set5" / "HR").glob("*.png"))
        return [(p, root / "Set5" / "LR_bicubic_x4" / f"{p.stem}x4.png") for p in hr]
    hr = sorted((root / name / "HR").glob("*_HR.png"))
    return [(p, p.parent.parent / "LR_bicubic_x4" / p.name.replace("_HR", "_LR")) for p in hr]


def _hr_originals(root: Path, name: str) -> list[Path]:
    folder = "HR" if name == "Set5" else "HR_original"  # Set5 HR sides are already multiples of 4
    return sorted((root / name / folder).glob("*.png"))


def _mean_scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    scores = [evaluate_image(sr, hr, scale=4) for sr, hr in pairs]
    return float(np.mean([s["psnr"] for s in scores])), float(np.mean([s["ssim"] for s in scores]))


def _assert_published(name: str, measured: tuple[float, float]) -> None:
    (p, s), (p0, s0) = measured, PUBLISHED[name]
    assert abs(p - p0) <= PSNR_TOL, f"{name}: PSNR {p:.4f} vs published {p0}"
    assert abs(s - s0) <= SSIM_TOL, f"{name}: SSIM {s:.5f} vs published {s0}"


# ------------------------------------------------------------------------------------------------
# Acceptance: published bicubic x4 baselines
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Set5", "Set14", "BSD100"])
def test_bicubic_x4_of_shipped_lr_reproduces_published_numbers(shared_datasets, name):
    pairs = []
    for hr_path, lr_path in _pairs_from_shipped_lr(shared_datasets, name):
        hr, lr = _load(hr_path), _load(lr_path)
        sr = imresize(lr, 4)
        assert sr.shape == hr.shape, f"{lr_path}: x4 gives {sr.shape}, HR is {hr.shape}"
        pairs.append((sr, hr))
    assert len(pairs) == {"Set5": 5, "Set14": 14, "BSD100": 100}[name]
    _assert_published(name, _mean_scores(pairs))


@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_bicubic_x4_from_hr_reproduces_published_numbers(shared_datasets, name):
    pairs = []
    for path in _hr_originals(shared_datasets, name):
        hr = modcrop(_load(path), 4)
        pairs.append((imresize(imresize(hr, 0.25), 4), hr))
    assert len(pairs) == {"Set5": 5, "Set14": 14}[name]
    _assert_published(name, _mean_scores(pairs))


# ------------------------------------------------------------------------------------------------
# Luma
# ------------------------------------------------------------------------------------------------
def test_y_of_black_white_and_primaries_is_bt601_rounded():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    # 16, 16+219, 16+65.481, 16+128.553, 16+24.966 -> rounded half up
    np.testing.assert_array_equal(rgb_to_y(px), [[16, 235, 81, 145, 41]])
    assert rgb_to_y(px).dtype == np.float64


def test_y_of_r_eq_g_eq_b_is_the_grey_level_mapped_to_16_235():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(rgb_to_y(rgb), np.floor(16 + 219 * grey.astype(np.float64) / 255.0 + 0.5))


def test_single_channel_image_is_luma_already():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(rgb_to_y(grey), grey.astype(np.float64))
    np.testing.assert_array_equal(rgb_to_y(grey[..., None]), grey.astype(np.float64))


# ------------------------------------------------------------------------------------------------
# PSNR
# ------------------------------------------------------------------------------------------------
def test_psnr_of_identical_images_is_inf():
    img = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    assert psnr(img, img.copy(), crop_border=4) == math.inf


def test_psnr_known_value_for_uniform_error_of_one_level():
    hr = np.full((20, 20), 100, dtype=np.uint8)
    assert psnr(hr + 1, hr, crop_border=0) == pytest.approx(10 * math.log10(255**2), abs=1e-12)
    sr = hr.copy()
    sr[:10] += 2  # half the pixels off by 2: MSE = 2
    assert psnr(sr, hr, crop_border=0) == pytest.approx(10 * math.log10(255**2 / 2), abs=1e-12)


def test_crop_border_is_removed_before_scoring():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:4] = 0
    sr[:, -4:] = 255  # damage only the 4-pixel frame
    assert psnr(sr, hr, crop_border=4) == math.inf
    assert ssim(sr, hr, crop_border=4) == pytest.approx(1.0)
    assert psnr(sr, hr, crop_border=3) < 30
    assert evaluate_image(sr, hr, scale=4)["psnr"] == math.inf


def test_float_or_mismatched_inputs_are_rejected():
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="to_uint8"):
        psnr(img.astype(np.float32), img, crop_border=0)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(img, img[:8], crop_border=0)
    with pytest.raises(ValueError, match="too small"):
        psnr(img, img, crop_border=8)


# ------------------------------------------------------------------------------------------------
# SSIM
# ------------------------------------------------------------------------------------------------
def _ssim_direct(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s ssim_index.m, line by line: fspecial('gaussian', 11, 1.5), filter2(..., 'valid')."""
    r = np.arange(-5, 6)
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def f(x: np.ndarray) -> np.ndarray:
        return correlate2d(x, w, mode="valid")

    mu1, mu2 = f(a), f(b)
    s11, s22, s12 = f(a * a) - mu1**2, f(b * b) - mu2**2, f(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


def test_ssim_equals_a_direct_matlab_style_implementation(shared_datasets):
    hr = read_image(shared_datasets / "Set5" / "HR" / "butterfly.png")
    sr = imresize(read_image(shared_datasets / "Set5" / "LR_bicubic_x4" / "butterflyx4.png"), 4)
    want = _ssim_direct(rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4])
    assert ssim(sr, hr, crop_border=4) == pytest.approx(want, abs=1e-10)


def test_ssim_of_identical_images_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert ssim(hr, hr, crop_border=4) == pytest.approx(1.0)
    noisy = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    assert ssim(noisy, hr, crop_border=4) < 0.99


def test_ssim_needs_a_full_window_after_cropping():
    img = np.zeros((18, 18, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="11x11"):
        ssim(img, img, crop_border=4)


# ------------------------------------------------------------------------------------------------
# Protocol object
# ------------------------------------------------------------------------------------------------
def test_protocol_exposes_its_constants_and_a_stable_id():
    assert PROTOCOL.id == "sr-y601-u8-crop=scale-ssim11g-lpips=alex0.1-v1"
    assert PROTOCOL.y_coefficients == (65.481, 128.553, 24.966) and PROTOCOL.y_offset == 16.0
    assert (PROTOCOL.ssim_window, PROTOCOL.ssim_sigma, PROTOCOL.ssim_k1, PROTOCOL.ssim_k2) == (
        11,
        1.5,
        0.01,
        0.03,
    )
    assert (PROTOCOL.lpips_net, PROTOCOL.lpips_version) == ("alex", "0.1")
    assert PROTOCOL.as_dict()["id"] == PROTOCOL.id


# ------------------------------------------------------------------------------------------------
# The metric registry
# ------------------------------------------------------------------------------------------------
def test_metric_registry_describes_each_built_in_metric():
    assert METRICS is registry.METRICS
    assert METRIC_NAMES == ("psnr", "ssim", "lpips")
    assert set(METRIC_NAMES) <= set(METRICS.names())
    described = {n: METRICS.get(n) for n in METRIC_NAMES}
    assert all(isinstance(m, Metric) and m.name == n for n, m in described.items())
    assert {n: (m.higher_is_better, m.decimals, m.needs_network) for n, m in described.items()} == {
        "psnr": (True, 2, False),
        "ssim": (True, 4, False),
        "lpips": (False, 4, True),
    }


def test_metric_descriptors_compute_the_protocol_metrics():
    rng = np.random.default_rng(5)
    hr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-9, 10, hr.shape), 0, 255).astype(np.uint8)
    assert METRICS.get("psnr").fn(sr, hr, 4, None, False) == psnr(sr, hr, crop_border=4)
    assert METRICS.get("ssim").fn(sr, hr, 4, None, False) == ssim(sr, hr, crop_border=4)


# ------------------------------------------------------------------------------------------------
# evaluate_image
# ------------------------------------------------------------------------------------------------
def test_evaluate_image_returns_the_requested_metrics_with_crop_equal_to_scale():
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-5, 6, hr.shape), 0, 255).astype(np.uint8)
    out = evaluate_image(sr, hr, scale=4)
    assert set(out) == {"psnr", "ssim"}
    assert out["psnr"] == psnr(sr, hr, crop_border=4) and out["ssim"] == ssim(sr, hr, crop_border=4)
    assert set(evaluate_image(sr, hr, scale=4, metrics=("ssim",))) == {"ssim"}


def test_evaluate_image_rejects_unknown_metrics_and_lpips_without_a_model():
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(RegistryError, match="unknown metric 'fid'; known: lpips, niqe, psnr, ssim") as info:
        evaluate_image(img, img, scale=4, metrics=("psnr", "fid"))
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="LPIPSMetric"):
        evaluate_image(img, img, scale=4, metrics=("lpips",))


# ------------------------------------------------------------------------------------------------
# LPIPS (random backbone, asked for explicitly: no pretrained weights offline)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lpips_random() -> LPIPSMetric:
    torch.manual_seed(0)
    return LPIPSMetric(random_backbone=True, batch_size=2)


def test_lpips_provenance_says_random_backbone(lpips_random):
    assert "random" in lpips_random.provenance


def test_lpips_batched_equals_per_image(lpips_random):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 3, 32, 32, generator=g), torch.rand(5, 3, 32, 32, generator=g)
    batched = lpips_random(x, y)
    assert batched.shape == (5,)
    single = torch.cat([lpips_random(x[i : i + 1], y[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    assert torch.all(lpips_random(x, x) == 0)


def test_lpips_rejects_inputs_outside_0_1(lpips_random):
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lpips_random(x * 2 - 1, x)


def test_evaluate_image_lpips_uses_the_cropped_full_rgb_images(lpips_random):
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    sr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    out = evaluate_image(sr, hr, scale=4, metrics=("psnr", "ssim", "lpips"), lpips=lpips_random)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a[4:-4, 4:-4]).permute(2, 0, 1)[None].float() / 255

    assert out["lpips"] == pytest.approx(float(lpips_random(t(sr), t(hr))[0]), abs=1e-7)
    gray = hr[..., 0]
    assert evaluate_image(gray, gray, scale=4, metrics=("lpips",), lpips=lpips_random)["lpips"] == 0.0
