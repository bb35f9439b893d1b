"""Spec for csrgan.data.resize: MATLAB ``imresize(..., 'bicubic')`` for arrays and tensors, and modcrop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from csrgan.data.io import read_image
from csrgan.data.resize import cubic_kernel, imresize, imresize_tensor, modcrop

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _set5_pair(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return read_image(root / "Set5" / "HR" / f"{name}.png"), read_image(
        root / "Set5" / "LR_bicubic_x4" / f"{name}x4.png"
    )


# ------------------------------------------------------------------------------------------------
# Acceptance: the shipped MATLAB LR of Set5
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SET5)
def test_x4_downscale_of_set5_hr_matches_shipped_matlab_lr_within_one_level(shared_datasets, name):
    hr, lr_matlab = _set5_pair(shared_datasets, name)
    lr = imresize(hr, 0.25)
    assert lr.shape == lr_matlab.shape and lr.dtype == np.uint8
    diff = np.abs(lr.astype(int) - lr_matlab.astype(int))
    assert (diff <= 1).mean() >= 0.995, f"{name}: only {(diff <= 1).mean():.4%} of pixels within +-1"


@pytest.mark.parametrize("name", SET5)
def test_uint8_rounding_after_each_pass_reproduces_matlab_bit_for_bit(shared_datasets, name):
    # Pins the documented choice: rounding after each axis pass (MATLAB's imresizemex keeps uint8
    # between passes) gives the shipped LR exactly; rounding once at the end would not (~90% exact).
    hr, lr_matlab = _set5_pair(shared_datasets, name)
    np.testing.assert_array_equal(imresize(hr, 0.25), lr_matlab)


# ------------------------------------------------------------------------------------------------
# Kernel and known values
# ------------------------------------------------------------------------------------------------
def test_cubic_kernel_is_keys_a_minus_half():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, -1.5])
    np.testing.assert_allclose(cubic_kernel(x), [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625, -0.0625])


def test_known_values_of_matlab_bicubic_on_a_4x4_ramp():
    # Values published in bicubic_pytorch's docstring (S. Son) as MATLAB's imresize(ramp, [3 3]). Its
    # "6.1505" is a typo for 6.1501: the ramp is point-symmetric, so out[i, j] + out[2-i, 2-j] = 15
    # (8.8499 + 6.1501), and that library's own code prints 6.150110.
    x = np.arange(16, dtype=np.float64).reshape(4, 4)
    expected = [[0.7506, 2.1004, 3.4503], [6.1501, 7.5000, 8.8499], [11.5497, 12.8996, 14.2494]]
    out = imresize(x, output_shape=(3, 3))
    np.testing.assert_allclose(out, expected, atol=1e-4)
    np.testing.assert_allclose(out + out[::-1, ::-1], 15.0, atol=1e-12)


def test_constant_image_stays_constant_up_and_down():
    img = np.full((20, 14, 3), 0.3)
    np.testing.assert_allclose(imresize(img, 0.25), 0.3, atol=1e-12)
    np.testing.assert_allclose(imresize(img, 3), 0.3, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Shapes and dtypes
# ------------------------------------------------------------------------------------------------
def test_upscale_shape_and_output_shape():
    img = np.zeros((7, 5, 3), dtype=np.uint8)
    assert imresize(img, 4).shape == (28, 20, 3)
    assert imresize(img, output_shape=(9, 13)).shape == (9, 13, 3)
    assert imresize(np.zeros((7, 5)), 2).shape == (14, 10)


def test_output_size_is_ceil_of_scale_times_input_like_matlab():
    assert imresize(np.zeros((11, 13)), 0.25).shape == (3, 4)


def test_dtypes_uint8_stays_uint8_floats_keep_their_precision():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    assert imresize(u8, 0.5).dtype == np.uint8
    assert imresize(u8.astype(np.float32) / 255, 2).dtype == np.float32
    assert imresize(u8.astype(np.float64) / 255, 2).dtype == np.float64


def test_float_output_keeps_cubic_overshoot_uint8_saturates():
    step = np.zeros((8, 8))
    step[:, 4:] = 1.0
    up = imresize(step, 4)
    assert up.min() < 0.0 and up.max() > 1.0  # no silent clipping of float results
    up8 = imresize((step * 255).astype(np.uint8), 4)
    assert up8.min() == 0 and up8.max() == 255


def test_grayscale_2d_equals_each_channel_of_rgb():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (20, 16), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    out = imresize(rgb, 0.25)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], imresize(gray, 0.25))


def test_bad_arguments_are_rejected_with_clear_errors():
    img = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img, 2, output_shape=(4, 4))
    with pytest.raises(ValueError, match="scale"):
        imresize(img, -2)
    with pytest.raises(TypeError, match="int16"):
        imresize(img.astype(np.int16), 2)
    with pytest.raises(TypeError, match="floating"):
        imresize_tensor(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2)


# ------------------------------------------------------------------------------------------------
# Tensor version
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((32, 24), {"scale": 0.25}),
        ((8, 6), {"scale": 4}),
        ((17, 13), {"output_shape": (7, 5)}),
        ((10, 11), {"output_shape": (23, 31)}),
        ((11, 13), {"scale": 0.25}),
    ],
)
def test_tensor_version_equals_numpy_version_on_floats(shape, kwargs):
    rng = np.random.default_rng(2)
    x = rng.random((2, 3, *shape))
    got = imresize_tensor(torch.from_numpy(x), **kwargs).numpy()
    for n in range(2):
        want = imresize(x[n].transpose(1, 2, 0), **kwargs).transpose(2, 0, 1)
        np.testing.assert_allclose(got[n], want, rtol=0, atol=1e-12)


def test_tensor_version_keeps_float32_and_device():
    x = torch.rand(1, 3, 16, 16)
    y = imresize_tensor(x, 0.25)
    assert y.dtype == torch.float32 and y.device == x.device and y.shape == (1, 3, 4, 4)


def test_gradient_flows_through_imresize_tensor():
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    imresize_tensor(x, 0.25).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    small = torch.rand(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize_tensor(t, output_shape=(9, 4)), (small,))


# ------------------------------------------------------------------------------------------------
# modcrop
# ------------------------------------------------------------------------------------------------
def test_modcrop_keeps_the_top_left_multiple_of_scale():
    img = np.arange(10 * 7 * 3, dtype=np.uint8).reshape(10, 7, 3)
    out = modcrop(img, 4)
    assert out.shape == (8, 4, 3)
    np.testing.assert_array_equal(out, img[:8, :4])
    assert modcrop(img[..., 0], 2).shape == (10, 6)
    assert modcrop(img, 1).shape == img.shape


def test_modcrop_rejects_bad_scale_and_too_small_images():
    with pytest.raises(ValueError, match="scale"):
        modcrop(np.zeros((8, 8)), 0)
    with pytest.raises(ValueError, match="smaller"):
        modcrop(np.zeros((3, 8)), 4)
