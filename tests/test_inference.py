"""csrgan.inference: applying a trained SR generator to image files (``csrgan upscale``) and scoring it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from csrgan.data.io import read_image, to_tensor, to_uint8, write_image
from csrgan.inference import evaluate_checkpoint, expand_inputs, model_upscaler, upscale_paths
from csrgan.train.srgan import build_sr_generator, save_sr_generator

MODEL_CFG = {
    "arch": "SRResNet",
    "in_ch": 3,
    "channels": 8,
    "n_blocks": 1,
    "scale": 4,
    "global_bicubic_skip": True,
}


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-plus-noise uint8 RGB image (structure at several scales, like a photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] * np.array([1.0, 0.6, -0.4])
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``final/``-style folder with a randomly initialised tiny SRResNet (non-trivial BN stats)."""
    torch.manual_seed(0)
    g = build_sr_generator(MODEL_CFG)
    with torch.no_grad():  # give BatchNorm non-default running stats, as a trained model has
        g.train()
        g(torch.rand(4, 3, 16, 16))
    return save_sr_generator(tmp_path_factory.mktemp("gen") / "final", g, MODEL_CFG)


def test_upscale_writes_one_x4_png_per_input(tmp_path: Path, generator_dir: Path) -> None:
    src = tmp_path / "in"
    write_image(src / "a.png", _textured(20, 30, 1))
    write_image(src / "b.png", _textured(17, 13, 2))  # odd sizes work
    single = tmp_path / "c.png"
    write_image(single, _textured(8, 8, 3))

    written = upscale_paths(generator_dir, [src, single], tmp_path / "out", tile=8, progress=False)

    assert [p.name for p in written] == ["a.png", "b.png", "c.png"]
    assert [read_image(p).shape for p in written] == [(80, 120, 3), (68, 52, 3), (32, 32, 3)]


def test_tiled_equals_untiled_and_no_overlap_shows_seams(generator_dir: Path) -> None:
    lr = _textured(40, 36, 4)
    whole = model_upscaler(generator_dir, tile=0)(lr).astype(int)
    tiled = model_upscaler(generator_dir, tile=12, overlap=16)(lr).astype(int)
    seams = model_upscaler(generator_dir, tile=12, overlap=0)(lr).astype(int)

    # Receptive field of the tiny model (~10 LR px) < overlap: identical up to float summation order,
    # which can flip a uint8 rounding by at most 1 on a handful of pixels.
    assert np.abs(tiled - whole).max() <= 1
    assert (tiled != whole).mean() < 1e-3
    # Without context the tile borders see zero padding instead of image: visibly different.
    assert np.abs(seams - whole).max() > 5


def test_upscaler_matches_the_generator_quantised_once(generator_dir: Path) -> None:
    from csrgan.train.srgan import load_sr_generator

    lr = _textured(12, 10, 5)
    with torch.no_grad():
        expected = to_uint8(load_sr_generator(generator_dir)(to_tensor(lr)))[0]
    np.testing.assert_array_equal(model_upscaler(generator_dir)(lr), expected)


def test_scale_mismatch_is_an_error(generator_dir: Path) -> None:
    with pytest.raises(ValueError, match="x4.*scale 2"):
        model_upscaler(generator_dir, scale=2)


def test_outputs_that_would_collide_or_overwrite_fail_before_any_work(
    tmp_path: Path, generator_dir: Path
) -> None:
    write_image(tmp_path / "x" / "same.png", _textured(8, 8, 6))
    write_image(tmp_path / "y" / "same.jpg", _textured(8, 8, 7))
    with pytest.raises(ValueError, match="both be written"):
        upscale_paths(generator_dir, [tmp_path / "x", tmp_path / "y"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="overwrite the input"):
        upscale_paths(generator_dir, [tmp_path / "x"], tmp_path / "x", progress=False)


def test_missing_inputs_and_checkpoints_name_the_path(tmp_path: Path, generator_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        expand_inputs([tmp_path / "nope.png"])
    write_image(tmp_path / "a.png", _textured(8, 8, 8))
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        upscale_paths(tmp_path / "no_such_run", [tmp_path / "a.png"], tmp_path / "out", progress=False)


def test_evaluate_checkpoint_scores_every_image_by_the_protocol(tmp_path: Path, generator_dir: Path) -> None:
    from csrgan.data.resize import imresize
    from csrgan.metrics import PROTOCOL, psnr, ssim

    hr_dir = tmp_path / "HR"
    hrs = {"p": _textured(48, 40, 9), "q": _textured(32, 36, 10)}
    for name, img in hrs.items():
        write_image(hr_dir / f"{name}.png", img)

    res = evaluate_checkpoint(generator_dir, hr_dir, scale=4, metrics=("psnr", "ssim"))

    assert res["n"] == 2 and res["scale"] == 4 and res["protocol"] == PROTOCOL.id
    up = model_upscaler(generator_dir)
    for row in res["images"]:
        hr = hrs[row["name"]]
        sr = up(imresize(hr, scale=0.25))  # LR = MATLAB bicubic of HR when no LR folder is given
        assert row["psnr"] == pytest.approx(psnr(sr, hr, crop_border=4))
        assert row["ssim"] == pytest.approx(ssim(sr, hr, crop_border=4))
    assert res["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in res["images"]]))
