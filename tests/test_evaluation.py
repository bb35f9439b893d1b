"""Spec of csrgan.evaluation and csrgan.models.tiling: tiled inference, SR / bicubic / CycleGAN-translation
evaluation, LPIPS."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from csrgan.config import EvalConfig, LPIPSConfig
from csrgan.config import TestSetConfig as SetConfig
from csrgan.data.io import read_image, write_image
from csrgan.data.resize import imresize, imresize_tensor, modcrop
from csrgan.evaluation import (
    build_lpips,
    evaluate_bicubic,
    evaluate_sr_model,
    evaluate_translation,
)
from csrgan.metrics import evaluate_image, psnr, ssim
from csrgan.models.srgan import SRResNet
from csrgan.models.tiling import tiled_forward
from csrgan.registry import RegistryError
from csrgan.weights import MissingWeightsError


def _tiny_srresnet() -> SRResNet:
    torch.manual_seed(0)
    return SRResNet(channels=8, n_blocks=1, scale=4).eval()


# Receptive-field radius of that SRResNet in LR px: head 9x9 (4) + one block of two 3x3 (2) + body
# tail 3x3 (1) + first up-conv, still at LR scale (1) + second up-conv at x2 (0.5) + 9x9 tail at x4
# (1) = 9.5 -> 10. (Measured: overlap 9 leaves errors ~1e-4, overlap 10 ~1e-7.)
RF_RADIUS_LR = 10


def test_receptive_radius_formula() -> None:
    assert _tiny_srresnet().receptive_radius == RF_RADIUS_LR
    assert SRResNet(channels=8, n_blocks=16, scale=4).receptive_radius == 40  # paper size: 39.5


def test_tiled_forward_equals_untiled_when_overlap_covers_the_receptive_field() -> None:
    net = _tiny_srresnet()
    lr = torch.rand(2, 3, 37, 45, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net(lr)
    tiled = tiled_forward(net, lr, scale=4, tile=16, overlap=RF_RADIUS_LR)
    assert tiled.shape == full.shape == (2, 3, 148, 180)
    assert torch.allclose(tiled, full, atol=1e-5, rtol=0)


def test_tiled_forward_without_overlap_shows_seams() -> None:
    """The equality above is not vacuous: without context the tile borders differ visibly."""
    net = _tiny_srresnet()
    lr = torch.rand(1, 3, 37, 45, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net(lr)
    assert (tiled_forward(net, lr, scale=4, tile=16, overlap=0) - full).abs().max() > 1e-3


def test_tiled_forward_whole_image_when_tile_is_zero_or_larger() -> None:
    net = _tiny_srresnet()
    lr = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        full = net(lr)
    assert torch.equal(tiled_forward(net, lr, 4, tile=0), full)
    assert torch.equal(tiled_forward(net, lr, 4, tile=64, overlap=4), full)


def test_tiled_forward_rejects_a_model_that_is_not_xscale() -> None:
    with pytest.raises(ValueError, match="not x4"):
        tiled_forward(lambda x: x, torch.rand(1, 3, 40, 40), scale=4, tile=16, overlap=2)


# ------------------------------------------------------------------------------------- SR / bicubic
def _set5(shared: Path, n: int = 2) -> SetConfig:
    return SetConfig(
        name="Set5", hr=str(shared / "Set5" / "HR"), lr=str(shared / "Set5" / "LR_bicubic_x4"), max_images=n
    )


def test_bicubic_evaluation_matches_metrics_directly(shared_datasets: Path, tmp_path: Path) -> None:
    ts = _set5(shared_datasets)
    got = evaluate_bicubic([ts], scale=4, metrics=["psnr", "ssim"], grid_dir=tmp_path, step=7)
    expected: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for name in ("baby", "bird"):  # the first two files by name
        hr = modcrop(read_image(shared_datasets / "Set5" / "HR" / f"{name}.png"), 4)
        lr = read_image(shared_datasets / "Set5" / "LR_bicubic_x4" / f"{name}x4.png")
        sr = imresize(lr, scale=4)
        expected["psnr"].append(psnr(sr, hr, crop_border=4))
        expected["ssim"].append(ssim(sr, hr, crop_border=4))
    assert set(got) == {"Set5/psnr", "Set5/ssim"}
    assert got["Set5/psnr"] == pytest.approx(np.mean(expected["psnr"]), abs=1e-12)
    assert got["Set5/ssim"] == pytest.approx(np.mean(expected["ssim"]), abs=1e-12)
    grid = read_image(tmp_path / "Set5_step7.png")
    # labelled baseline grid (csrgan.grids): LR (nearest) | bicubic | HR, 2 rows, plus title/caption bands
    assert 3 * 128 < grid.shape[1] < 4 * 128 and grid.shape[0] > 2 * 128


def test_sr_model_evaluation_quantises_and_tiles(shared_datasets: Path, tmp_path: Path) -> None:
    """A float bicubic "network", tiled, scores like MATLAB bicubic (up to uint8 rounding order)."""
    ts = _set5(shared_datasets)

    def bicubic_net(x: torch.Tensor) -> torch.Tensor:
        return imresize_tensor(x, scale=4)

    got = evaluate_sr_model(
        bicubic_net, [ts], 4, ["psnr", "ssim"], lpips=None, device="cpu", tile=32, grid_dir=tmp_path, step=3
    )
    ref = evaluate_bicubic([ts], 4, ["psnr", "ssim"])
    assert set(got) == {"Set5/psnr", "Set5/ssim"}
    assert got["Set5/psnr"] == pytest.approx(ref["Set5/psnr"], abs=0.05)
    assert got["Set5/ssim"] == pytest.approx(ref["Set5/ssim"], abs=1e-3)
    assert (tmp_path / "Set5_step3.png").is_file()


def test_lpips_requested_but_unavailable_leaves_the_key_out(shared_datasets: Path) -> None:
    got = evaluate_bicubic([_set5(shared_datasets, 1)], 4, ["psnr", "lpips"], lpips=None)
    assert set(got) == {"Set5/psnr"}


def test_lpips_is_the_mean_over_images(tmp_path: Path) -> None:
    from csrgan.metrics import LPIPSMetric

    rng = np.random.default_rng(0)
    hr_dir = tmp_path / "HR"
    for i in range(2):
        write_image(hr_dir / f"{i}.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    ts = SetConfig(name="noise", hr=str(hr_dir))
    lpips = LPIPSMetric(random_backbone=True)
    got = evaluate_bicubic([ts], 4, ["lpips"], lpips=lpips)
    per_image = []
    for i in range(2):
        hr = read_image(hr_dir / f"{i}.png")
        sr = imresize(imresize(hr, scale=0.25), scale=4)
        per_image.append(evaluate_image(sr, hr, 4, ("lpips",), lpips)["lpips"])
    assert got["noise/lpips"] == pytest.approx(np.mean(per_image), rel=1e-6)


def test_no_reference_sets_get_a_grid_but_no_metrics(tmp_path: Path) -> None:
    lr_dir = tmp_path / "LR"
    write_image(lr_dir / "a.png", np.full((20, 24, 3), 128, np.uint8))
    ts = SetConfig(name="real", lr=str(lr_dir), noref_metrics=[])
    got = evaluate_bicubic([ts], 4, ["psnr", "ssim"], grid_dir=tmp_path / "grids", step=0)
    assert got == {}
    assert (tmp_path / "grids" / "real_step0.png").is_file()


class _RecordingBicubic:
    """A bicubic "network" that records the LR tile sizes it is given."""

    def __init__(self, receptive_radius: int | None) -> None:
        if receptive_radius is not None:
            self.receptive_radius = receptive_radius
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append((x.shape[-2], x.shape[-1]))
        return imresize_tensor(x, scale=4)


@pytest.mark.parametrize(("radius", "overlap"), [(3, 3), (None, 16)])
def test_sr_model_evaluation_overlap_defaults_to_the_receptive_radius(
    shared_datasets: Path, radius: int | None, overlap: int
) -> None:
    """Each tile gets ``receptive_radius`` LR px of context (16 for a function without one)."""
    net = _RecordingBicubic(radius)
    evaluate_sr_model(net, [_set5(shared_datasets, 1)], 4, ["psnr"], lpips=None, device="cpu", tile=8)
    assert max(max(hw) for hw in net.sizes) == 8 + 2 * overlap


def test_sr_model_evaluation_with_the_default_overlap_equals_untiled(shared_datasets: Path) -> None:
    ts = _set5(shared_datasets, 1)
    net = _tiny_srresnet()
    whole = evaluate_sr_model(net, [ts], 4, ["psnr"], lpips=None, device="cpu", tile=0)
    tiled = evaluate_sr_model(net, [ts], 4, ["psnr"], lpips=None, device="cpu", tile=16)
    seams = evaluate_sr_model(net, [ts], 4, ["psnr"], lpips=None, device="cpu", tile=16, overlap=0)
    assert tiled["Set5/psnr"] == pytest.approx(whole["Set5/psnr"], abs=1e-3)
    assert abs(seams["Set5/psnr"] - whole["Set5/psnr"]) > 1e-3


def test_unknown_metric_is_an_error(tmp_path: Path) -> None:
    write_image(tmp_path / "HR" / "a.png", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(RegistryError, match="unknown metric 'fid'; known: .*psnr"):
        evaluate_bicubic([SetConfig(name="x", hr=str(tmp_path / "HR"))], 4, ["fid"])


# ---------------------------------------------------------------------------------------- Table 2
def _real_set(root: Path) -> SetConfig:
    """HR + a 'real' LR that is bicubic LR plus a fixed brightness shift (so it differs from bicubic)."""
    rng = np.random.default_rng(3)
    for i in range(2):
        hr = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
        hr = imresize(imresize(hr, scale=0.5), output_shape=(64, 80))  # smoother than noise
        real = np.clip(imresize(hr, scale=0.25).astype(int) + 6, 0, 255).astype(np.uint8)
        write_image(root / "HR" / f"{i}.png", hr)
        write_image(root / "LR" / f"{i}.png", real)
    return SetConfig(name="unknown", hr=str(root / "HR"), lr=str(root / "LR"), degradation="real")


def test_translation_scores_g_and_bicubic_against_the_real_lr(tmp_path: Path) -> None:
    ts = _real_set(tmp_path)
    skipped = SetConfig(name="bic", hr=str(tmp_path / "HR"))  # degradation bicubic: not scored

    def brighten(x: torch.Tensor) -> torch.Tensor:  # the "perfect G" for this degradation
        return x + 6 / 255

    got = evaluate_translation(brighten, [ts, skipped], scale=4, device="cpu")
    assert set(got) == {"unknown/g_psnr", "unknown/g_ssim", "unknown/bicubic_psnr", "unknown/bicubic_ssim"}
    bic_psnr, bic_ssim = [], []
    for i in range(2):
        hr = read_image(tmp_path / "HR" / f"{i}.png")
        real = read_image(tmp_path / "LR" / f"{i}.png")
        bic = imresize(hr, scale=0.25)
        bic_psnr.append(psnr(bic, real, crop_border=0))  # crop border 0 at LR scale
        bic_ssim.append(ssim(bic, real, crop_border=0))
    assert got["unknown/bicubic_psnr"] == pytest.approx(np.mean(bic_psnr), abs=1e-12)
    assert got["unknown/bicubic_ssim"] == pytest.approx(np.mean(bic_ssim), abs=1e-12)
    # G undoes the shift except where the real LR was clipped at 255 -> far better than bicubic
    assert got["unknown/g_psnr"] > got["unknown/bicubic_psnr"] + 10


def test_translation_with_identity_g_equals_the_bicubic_baseline(tmp_path: Path) -> None:
    got = evaluate_translation(lambda x: x, [_real_set(tmp_path)], scale=4, device="cpu")
    assert got["unknown/g_psnr"] == got["unknown/bicubic_psnr"]
    assert got["unknown/g_ssim"] == got["unknown/bicubic_ssim"]
    assert math.isfinite(got["unknown/g_psnr"])


def test_translation_rejects_a_g_that_changes_the_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="changed the LR size"):
        evaluate_translation(lambda x: x[..., 1:, :], [_real_set(tmp_path)], scale=4, device="cpu")


# -------------------------------------------------------------------------------------------- LPIPS
def test_build_lpips_none_when_not_requested() -> None:
    assert build_lpips(EvalConfig(metrics=["psnr", "ssim"])) is None


def test_build_lpips_random_backbone_only_when_asked() -> None:
    metric = build_lpips(EvalConfig(lpips=LPIPSConfig(random_backbone=True)))
    assert metric is not None
    assert "random" in metric.provenance


def test_build_lpips_missing_weights_optional_warns_once_and_returns_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = EvalConfig(lpips=LPIPSConfig(source=str(tmp_path / "nope.pth"), optional=True))
    with caplog.at_level(logging.WARNING, logger="csrgan.evaluation"):
        assert build_lpips(cfg) is None
    warnings = [r for r in caplog.records if r.name == "csrgan.evaluation"]
    assert len(warnings) == 1 and "LPIPS DISABLED" in warnings[0].getMessage()
    err = capsys.readouterr().err
    assert err.count("LPIPS DISABLED") == 1 and "nope.pth" in err


def test_build_lpips_missing_weights_not_optional_raises(tmp_path: Path) -> None:
    cfg = EvalConfig(lpips=LPIPSConfig(source=str(tmp_path / "nope.pth"), optional=False))
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        build_lpips(cfg)


def test_build_lpips_rejects_a_net_the_protocol_does_not_use() -> None:
    with pytest.raises(ValueError, match="eval.lpips.net"):
        build_lpips(EvalConfig(lpips=LPIPSConfig(net="vgg", random_backbone=True)))
