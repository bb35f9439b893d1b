"""csrgan.inference: applying a trained SR generator to image files (``csrgan upscale``), and scoring it
(csrgan.evaluation.evaluate_checkpoint)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csrgan.data.io import read_image, to_tensor, to_uint8, write_image
from csrgan.evaluation import evaluate_checkpoint
from csrgan.inference import expand_inputs, model_upscaler, upscale_paths
from csrgan.models.artifacts import GeneratorSpec, build_generator, load_generator, save_generator
from csrgan.registry import SR_GENERATORS

SPEC = GeneratorSpec("sr", "srresnet", {"channels": 8, "n_blocks": 1, "global_bicubic_skip": True}, scale=4)

#: A registered SR generator (as a plugin would add) that keeps no ``scale`` attribute: only its
#: generator.json says which scale it was trained for. Unique name: registrations are never undone.
SCALELESS = f"test_scaleless_{uuid.uuid4().hex[:8]}"


@SR_GENERATORS.register(SCALELESS, injected=("in_ch", "scale"))
class ScalelessUpsampler(nn.Module):
    def __init__(self, in_ch: int = 3, scale: int = 4) -> None:
        super().__init__()
        self.mix = nn.Conv2d(in_ch, in_ch, 1)
        self.factor = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.mix(x), scale_factor=self.factor, mode="nearest")


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
    g = build_generator(SPEC)
    with torch.no_grad():  # give BatchNorm non-default running stats, as a trained model has
        g.train()
        g(torch.rand(4, 3, 16, 16))
    return save_generator(tmp_path_factory.mktemp("gen") / "final", g, SPEC)


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
    lr = _textured(12, 10, 5)
    with torch.no_grad():
        expected = to_uint8(load_generator(generator_dir, "sr")(to_tensor(lr)))[0]
    np.testing.assert_array_equal(model_upscaler(generator_dir)(lr), expected)


def test_scale_mismatch_is_an_error(generator_dir: Path) -> None:
    with pytest.raises(ValueError, match="x4.*scale 2"):
        model_upscaler(generator_dir, scale=2)


def test_the_scale_comes_from_the_generator_spec(tmp_path: Path) -> None:
    """generator.json records the scale of every generator, so no --scale is needed, and a wrong one
    is refused, whether or not the network object happens to carry a ``scale`` attribute."""
    spec = GeneratorSpec("sr", SCALELESS, {}, scale=4)
    folder = save_generator(tmp_path / "final", build_generator(spec), spec)
    up = model_upscaler(folder)
    assert up.scale == 4
    assert up(_textured(6, 5, 11)).shape == (24, 20, 3)
    with pytest.raises(ValueError, match="x4"):
        model_upscaler(folder, scale=2)


def test_a_degradation_generator_is_not_an_upscaler(tmp_path: Path) -> None:
    spec = GeneratorSpec("degradation", "resnet", {"ngf": 4, "n_blocks": 1}, scale=4)
    folder = save_generator(tmp_path / "cyclegan" / "final", build_generator(spec), spec)
    with pytest.raises(ValueError, match="holds a degradation generator.*an SR generator"):
        model_upscaler(folder)


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
