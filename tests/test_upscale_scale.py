"""``csrgan upscale`` at scale: progress per tile, uint8 output with memory bounded by the tile, the
streamed PNG, and the CLI's defaults (csrgan.models.tiling.iter_tiles, csrgan.inference). No timing."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from PIL import Image
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

from csrgan.cli import upscale as upscale_cli
from csrgan.data.io import read_image, to_tensor, to_uint8, write_image
from csrgan.inference import (
    DEFAULT_TILE,
    ModelUpscaler,
    tiled_upscale_png,
    tiled_upscale_uint8,
    upscale_paths,
)
from csrgan.models.artifacts import GeneratorSpec, build_generator, save_generator
from csrgan.models.srgan import SRResNet
from csrgan.models.tiling import count_tiles, tile_grid, tiled_forward


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] * np.array([1.0, 0.6, -0.4])
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


class ExactConvNet(nn.Module):
    """x4, receptive radius 2 LR px, computed in integers: a 5x5 box sum of the uint8 levels (exact in
    float32 in any summation order), nearest x4, then one division. Tiled == untiled holds bit for bit,
    whatever kernels the backend picks, and the output spans [0, 1] with values to round either way."""

    radius = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = torch.round(x * 255.0)
        box = F.conv2d(levels, torch.ones(3, 1, 5, 5), padding=2, groups=3)
        return F.interpolate(box, scale_factor=4, mode="nearest") / (25 * 255.0)


def _tiny_srresnet() -> SRResNet:
    torch.manual_seed(0)
    return SRResNet(channels=8, n_blocks=1, scale=4, global_bicubic_skip=True).eval()


# ------------------------------------------------------------------------------------------ progress
@pytest.mark.parametrize(
    ("h", "w", "tile"), [(37, 45, 16), (32, 32, 16), (10, 70, 16), (20, 20, 0), (8, 9, 16)]
)
def test_on_tile_counts_every_tile_exactly_once(h: int, w: int, tile: int) -> None:
    expected = 1 if tile == 0 or (h <= tile and w <= tile) else math.ceil(h / tile) * math.ceil(w / tile)
    assert count_tiles(h, w, tile) == expected
    float_calls: list[tuple[int, int]] = []
    uint8_calls: list[tuple[int, int]] = []
    tiled_forward(
        ExactConvNet(), torch.rand(1, 3, h, w), 4, tile, 2, on_tile=lambda *a: float_calls.append(a)
    )
    tiled_upscale_uint8(ExactConvNet(), _image(h, w, 0), 4, tile, 2, on_tile=lambda *a: uint8_calls.append(a))
    assert float_calls == uint8_calls == [(i, expected) for i in range(1, expected + 1)]


def test_tile_cores_partition_the_image() -> None:
    seen = np.zeros((37, 45), int)
    for t in tile_grid(37, 45, 16, 5):
        seen[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert (t.py0, t.px0) == (max(t.y0 - 5, 0), max(t.x0 - 5, 0))
        assert (t.py1, t.px1) == (min(t.y1 + 5, 37), min(t.x1 + 5, 45))
    assert (seen == 1).all()


def test_the_library_is_quiet_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lr = _image(20, 24, 1)
    tiled_forward(ExactConvNet(), to_tensor(lr), 4, tile=8, overlap=2)
    tiled_upscale_uint8(ExactConvNet(), lr, 4, tile=8, overlap=2)
    tiled_upscale_png(ExactConvNet(), lr, 4, tmp_path / "a.png", tile=8, overlap=2)
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("tile", [0, 7, 8, 13, 64])
def test_uint8_tiled_path_equals_the_untiled_net_bit_exactly(tmp_path: Path, tile: int) -> None:
    net, lr = ExactConvNet(), _image(27, 38, 2)
    with torch.no_grad():
        expected = to_uint8(net(to_tensor(lr)))[0]

    got = tiled_upscale_uint8(net, lr, 4, tile=tile, overlap=net.radius)
    tiled_upscale_png(net, lr, 4, tmp_path / "sr.png", tile=tile, overlap=net.radius)

    assert got.dtype == np.uint8 and got.shape == (108, 152, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(read_image(tmp_path / "sr.png"), expected)
    if 0 < tile < 27:  # not vacuous: without the context the tile borders differ
        assert (tiled_upscale_uint8(net, lr, 4, tile=tile, overlap=0) != expected).any()


@pytest.mark.parametrize(("tile", "overlap"), [(12, 16), (9, 3), (0, 16)])
def test_uint8_path_is_the_float_path_quantised_once(tmp_path: Path, tile: int, overlap: int) -> None:
    """Quantising each tile core as it comes equals quantising the assembled float image: the same
    pixels as before this path existed, for a real SRResNet (BN in eval, PReLU, PixelShuffle, skip)."""
    net, lr = _tiny_srresnet(), _image(40, 36, 3)
    with torch.no_grad():
        old = to_uint8(tiled_forward(net, to_tensor(lr), 4, tile=tile, overlap=overlap))[0]
    np.testing.assert_array_equal(tiled_upscale_uint8(net, lr, 4, tile=tile, overlap=overlap), old)
    tiled_upscale_png(net, lr, 4, tmp_path / "sr.png", tile=tile, overlap=overlap)
    np.testing.assert_array_equal(read_image(tmp_path / "sr.png"), old)


# ------------------------------------------------------------------------------------------ memory
class _FloatSizes(TorchDispatchMode):
    """Records the element count of every floating-point tensor any torch op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.numels: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.numels.append(t.numel())
        return out


class _RecordingModel(nn.Module):
    """ExactConvNet that records the LR shapes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.shapes = ExactConvNet(), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def test_uint8_path_never_makes_a_float_image_of_the_output_size() -> None:
    h, w, tile, overlap = 64, 80, 16, 2
    lr, full = _image(h, w, 4), 3 * (4 * h) * (4 * w)
    tile_out = 3 * (4 * (tile + 2 * overlap)) ** 2
    model = _RecordingModel()

    with _FloatSizes() as mode:
        sr = tiled_upscale_uint8(model, lr, 4, tile=tile, overlap=overlap)

    assert sr.dtype == np.uint8 and sr.shape == (4 * h, 4 * w, 3)
    assert len(model.shapes) == count_tiles(h, w, tile) == 20
    assert all(s[-2] <= tile + 2 * overlap and s[-1] <= tile + 2 * overlap for s in model.shapes)
    assert max(mode.numels) <= tile_out < full / 10  # only tile-sized floats, never an SR image
    # The check is not vacuous: the float-assembled path does make a float SR image (and a float LR).
    with _FloatSizes() as mode:
        to_uint8(tiled_forward(ExactConvNet(), to_tensor(lr), 4, tile=tile, overlap=overlap))
    assert max(mode.numels) == full


def test_streamed_png_memory_does_not_grow_with_the_image(tmp_path: Path) -> None:
    """numpy (and zlib) allocations are traced by tracemalloc: the array path holds the uint8 SR
    image, the PNG path one row of tiles, the PNG filter's temporaries (16 rows at a time) and zlib's
    fixed state (~0.3 MB), whatever the image height."""
    net, w, tile = ExactConvNet(), 24, 16

    def peak(fn) -> int:  # type: ignore[no-untyped-def]
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    lrs = {h: _image(h, w, 5) for h in (256, 2048)}
    small, tall = (
        peak(lambda h=h: tiled_upscale_png(net, lrs[h], 4, tmp_path / f"{h}.png", tile, 2)) for h in lrs
    )
    tall_bytes = (4 * 2048) * (4 * w) * 3  # 2.4 MB of uint8 SR
    assert peak(lambda: tiled_upscale_uint8(net, lrs[2048], 4, tile, 2)) >= tall_bytes
    assert tall - small < tall_bytes / 10  # 8x the rows, (almost) no more memory (the tile list)
    assert tall < tall_bytes / 3
    np.testing.assert_array_equal(
        read_image(tmp_path / "2048.png"), tiled_upscale_uint8(net, lrs[2048], 4, tile, 2)
    )


# ------------------------------------------------------------------------------------------ the PNG
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_streamed_png_decodes_to_the_same_pixels(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (9, 11, channels)), 7, 0), 5, 1)
    img = np.clip(smooth + rng.integers(-3, 4, smooth.shape), 0, 255).astype(np.uint8)  # (63, 55, C)

    class Identity1(nn.Module):  # x1 "upscale": the PNG gets exactly the input
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    tiled_upscale_png(Identity1(), img, 1, tmp_path / "x.png", tile=10, overlap=0)

    with Image.open(tmp_path / "x.png") as im:
        assert im.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        back = np.asarray(im)
    np.testing.assert_array_equal(back.reshape(img.shape), img)


def test_a_failing_model_leaves_no_png_behind(tmp_path: Path) -> None:
    class FailsOnThirdTile(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("out of memory")
            return F.interpolate(x, scale_factor=4, mode="nearest")

    with pytest.raises(RuntimeError, match="out of memory"):
        tiled_upscale_png(FailsOnThirdTile(), _image(20, 20, 6), 4, tmp_path / "sr.png", tile=8, overlap=0)
    assert list(tmp_path.iterdir()) == []


def test_upscaler_rejects_float_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ModelUpscaler(ExactConvNet(), 4)(np.zeros((4, 4, 3), np.float32))


# ---------------------------------------------------------------------------------- upscale_paths, CLI
@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = GeneratorSpec(
        "sr", "srresnet", {"channels": 8, "n_blocks": 1, "global_bicubic_skip": True}, scale=4
    )
    torch.manual_seed(0)
    return save_generator(tmp_path_factory.mktemp("gen") / "final", build_generator(spec).eval(), spec)


def test_upscale_paths_shows_one_bar_of_tiles_over_all_images(
    tmp_path: Path, generator_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "in" / "a.png", _image(20, 30, 7))  # 3 x 4 tiles of 8
    write_image(tmp_path / "in" / "b.png", _image(8, 8, 8))  # 1 tile

    written = upscale_paths(generator_dir, [tmp_path / "in"], tmp_path / "out", tile=8)

    err = capsys.readouterr().err
    assert "13/13" in err and ("tile/s" in err or "s/tile" in err)
    assert "b.png (2/2)" in err
    assert [read_image(p).shape for p in written] == [(80, 120, 3), (32, 32, 3)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]  # no .part left


def test_upscale_paths_matches_the_upscaler(tmp_path: Path, generator_dir: Path) -> None:
    from csrgan.inference import model_upscaler

    lr = _image(21, 19, 9)
    write_image(tmp_path / "p.png", lr)
    (out,) = upscale_paths(generator_dir, [tmp_path / "p.png"], tmp_path / "o", tile=8, progress=False)
    np.testing.assert_array_equal(read_image(out), model_upscaler(generator_dir, tile=8)(lr))


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("upscale")(upscale_cli.upscale)
    app.command("noop")(lambda: None)  # two commands, so "upscale" is a sub-command as in the real app
    return app


def test_cli_defaults_are_the_library_defaults_and_the_help_says_why() -> None:
    import inspect

    params = inspect.signature(upscale_cli.upscale).parameters
    assert params["tile"].default == DEFAULT_TILE
    assert params["overlap"].default is None  # the generator's receptive radius (exact tiling)
    assert f"default {DEFAULT_TILE}" in upscale_cli.TILE_HELP
    res = CliRunner().invoke(_app(), ["upscale", "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "--tile" in res.output and "0 = whole image" in res.output and "measured" in res.output


def test_cli_errors_stay_one_line(tmp_path: Path, generator_dir: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    res = CliRunner().invoke(
        _app(), ["upscale", str(generator_dir), str(tmp_path / "bad.png"), "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot read image") and "bad.png" in lines[0]
    assert not (tmp_path / "o").exists()  # failed before any work


def test_the_default_overlap_is_the_generators_receptive_radius(generator_dir: Path) -> None:
    """Exact tiling by default: a paper-size SRResNet needs 40 LR px of context, not a fixed 16."""
    from csrgan.inference import model_upscaler

    up = model_upscaler(generator_dir, tile=8)
    assert up.overlap == up.model.receptive_radius == 10  # 4 + 2*1 + 1 + 1.5 + 1 -> 10 (1 block, x4)
    assert model_upscaler(generator_dir, tile=8, overlap=3).overlap == 3
    lr = _image(20, 24, 3)
    np.testing.assert_array_equal(up(lr), model_upscaler(generator_dir, tile=0)(lr))
