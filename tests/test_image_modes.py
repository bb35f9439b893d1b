"""Every PIL mode the readers accept is converted right (16-bit scaled, never clipped); the rest are refused.

A 16-bit greyscale PNG used to be read as all white (``convert("RGB")`` clips values above 255): the
PSNR of the trial that used one fell by 3.6 dB without a word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from csrgan.data.io import (
    CONVERTIBLE_MODES,
    READABLE_MODES,
    ImageReadError,
    image_header,
    is_grayscale_file,
    read_image,
)

RAMP8 = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # 0..252


def _save(im: Image.Image, path: Path) -> Path:
    im.save(path)
    return path


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    v = np.array([[0, 257, 32767, 32768], [65535, 65280, 128, 129]], dtype=np.uint16)
    path = _save(Image.fromarray(v), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    got = read_image(path)
    want = np.rint(v.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert got.shape == (2, 4, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], want)
    np.testing.assert_array_equal(got[..., 0], got[..., 2])
    assert got.max() == 255 and got.min() == 0 and len(np.unique(got)) > 2  # not all white
    assert is_grayscale_file(path)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_tiff_variants(tmp_path: Path, mode: str) -> None:
    v = RAMP8.astype(np.uint16) * 257
    im = Image.frombytes(mode, (8, 8), v.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    path = _save(im, tmp_path / "g.tif")
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(read_image(path)[..., 1], RAMP8)


def test_32_bit_integer_within_16_bits_is_scaled_and_beyond_refused(tmp_path: Path) -> None:
    ok = _save(Image.fromarray(RAMP8.astype(np.int32) * 257), tmp_path / "i32.tif")
    assert Image.open(ok).mode == "I"
    np.testing.assert_array_equal(read_image(ok)[..., 0], RAMP8)
    bad = _save(Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)), tmp_path / "big.tif")
    with pytest.raises(ImageReadError, match=r"big\.tif.*outside 16 bits"):
        read_image(bad)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("1", ".png"), ("L", ".png"), ("LA", ".png"), ("P", ".png"), ("RGB", ".png"), ("RGBA", ".png"),
     ("RGBA", ".tif"), ("CMYK", ".tif"), ("CMYK", ".jpg"), ("YCbCr", ".jpg"), ("L", ".bmp"), ("P", ".gif")],
)  # fmt: skip
def test_each_8_bit_mode_reads_as_pil_converts_it(tmp_path: Path, mode: str, suffix: str) -> None:
    rgb = np.stack([RAMP8, RAMP8[::-1], np.full_like(RAMP8, 128)], axis=2)
    im = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"x{suffix}"
    im.save(path)
    with Image.open(path) as back:
        stored = back.mode
        want = np.asarray(back.convert("RGB"))
    assert stored in CONVERTIBLE_MODES
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == (8, 8, 3)
    np.testing.assert_array_equal(got, want)
    if mode in ("RGB", "RGBA") and suffix != ".jpg":  # lossless round trips of the colours
        np.testing.assert_array_equal(got, rgb)


def test_every_readable_mode_is_covered_by_a_test() -> None:
    tested = {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr"} | {"I;16", "I;16B", "I"}
    # I;16L/I;16N: aliases of I;16 on little-endian hosts; RGBX: no Pillow writer makes one (some BMP
    # and TIFF readers do) and it takes the same convert("RGB") path as RGBA.
    assert set(READABLE_MODES) - tested <= {"I;16L", "I;16N", "RGBX"}


@pytest.mark.parametrize("mode", ["F", "LAB"])
def test_modes_without_a_defined_8_bit_reading_are_refused_by_name(tmp_path: Path, mode: str) -> None:
    if mode == "F":
        im = Image.fromarray(RAMP8.astype(np.float32) / 255)
        path = tmp_path / "f.tif"
    else:
        im = Image.new(mode, (8, 8))
        path = tmp_path / f"{mode}.tif"
    im.save(path)
    actual = Image.open(path).mode
    if actual in READABLE_MODES:
        pytest.skip(f"this Pillow stores {mode} as {actual}")
    with pytest.raises(ImageReadError, match=rf"{path.name}.*mode {actual!r}"):
        read_image(path)
    with pytest.raises(ImageReadError, match="not read by csrgan"):
        image_header(path)


def test_truncated_png_passes_the_header_but_not_the_decode(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    path = _save(Image.fromarray(noise), tmp_path / "t.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert image_header(path) == (64, 64, "RGB")
    with pytest.raises(ImageReadError, match=r"t\.png"):
        read_image(path)
