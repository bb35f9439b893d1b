"""Spec for csrgan.data.degradations: each op is correct, pipelines are seeded data, configs are validated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from csrgan import registry
from csrgan.cli.data import app
from csrgan.data.degradations import (
    DEGRADATIONS,
    DegradationConfigError,
    DegradationPipeline,
    default_pipeline,
    degrade_exact,
    degrade_folder,
    gaussian_kernel,
    load_pipeline,
    motion_kernel,
)
from csrgan.data.io import read_image, write_image
from csrgan.data.resize import imresize


def _photo(size: int = 128) -> np.ndarray:
    """A natural-image crop (the astronaut bundled with scikit-image), uint8 RGB."""
    import skimage.data

    img = read_image(Path(skimage.data.__file__).parent / "astronaut.png")
    return np.ascontiguousarray(img[100 : 100 + size, 150 : 150 + size])


def _flat(value: int, size: int = 256) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def _run(steps: list[dict], img: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    return DegradationPipeline.from_config(steps)(img, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------ kernels
@pytest.mark.parametrize("size,sx,sy,theta", [(7, 0.2, 0.2, 0), (21, 3.0, 1.0, 30), (15, 1.5, 2.5, -100)])
def test_gaussian_kernel_sums_to_one_and_is_point_symmetric(size, sx, sy, theta):
    k = gaussian_kernel(size, sx, sy, theta)
    assert k.shape == (size, size)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
    assert k.argmax() == (size * size) // 2  # peak in the centre


def _moments(k: np.ndarray) -> tuple[float, float, float]:
    r = np.arange(k.shape[0]) - k.shape[0] // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    return float((k * xx**2).sum()), float((k * yy**2).sum()), float((k * xx * yy).sum())


def test_anisotropic_gaussian_has_the_requested_spread_and_orientation():
    var_x, var_y, cov = _moments(gaussian_kernel(41, 3.0, 1.0, 0.0))
    assert var_x == pytest.approx(9.0, rel=0.01) and var_y == pytest.approx(1.0, rel=0.01)
    assert cov == pytest.approx(0.0, abs=1e-9)
    var_x, var_y, _ = _moments(gaussian_kernel(41, 3.0, 1.0, 90.0))  # rotated: long axis vertical
    assert var_x == pytest.approx(1.0, rel=0.01) and var_y == pytest.approx(9.0, rel=0.01)
    # 45 deg counter-clockwise on screen: going right goes up (row index decreases) -> negative covariance
    _, _, cov = _moments(gaussian_kernel(41, 3.0, 1.0, 45.0))
    assert cov == pytest.approx(-(9.0 - 1.0) / 2, rel=0.02)


def test_motion_kernel_is_a_normalised_line_of_the_given_length():
    assert motion_kernel(0, 30).tolist() == [[1.0]]
    k = motion_kernel(6, 0)  # horizontal: only the centre row is used, spanning 7 taps (+-3)
    c = k.shape[0] // 2
    assert k.sum() == pytest.approx(1.0)
    assert np.count_nonzero(k[c]) == 7 and np.count_nonzero(np.delete(k, c, axis=0)) == 0
    v = motion_kernel(6, 90)
    np.testing.assert_allclose(v, k.T, atol=1e-12)
    np.testing.assert_allclose(motion_kernel(9, 37), motion_kernel(9, 37)[::-1, ::-1], atol=1e-12)


# --------------------------------------------------------------------------------------------- ops
def test_blur_keeps_flat_images_flat_and_smooths_texture():
    flat, _ = _run([{"type": "gaussian_blur", "sigma_x": 3.0, "kernel_size": 21}], _flat(77, 32))
    assert (flat == 77).all()  # kernel sums to 1, borders reflect: nothing leaks in
    img = _photo()
    blurred, rec = _run([{"type": "gaussian_blur", "sigma_x": 2.0}], img)
    assert blurred.shape == img.shape
    assert (
        np.abs(np.diff(blurred.astype(float), axis=1)).mean()
        < 0.6 * np.abs(np.diff(img.astype(float), axis=1)).mean()
    )
    assert rec == [
        {
            "type": "gaussian_blur",
            "applied": True,
            "kernel_size": 21,
            "sigma_x": 2.0,
            "sigma_y": 2.0,
            "theta": 0.0,
            "isotropic": True,
        }
    ]


def test_motion_blur_blurs_along_its_direction_only():
    img = np.zeros((41, 41, 3), np.uint8)
    img[20, 20] = 255
    out, rec = _run([{"type": "motion_blur", "length": 8, "angle": 0}], img)
    assert rec[0]["kernel_size"] == 9
    assert out[20].sum() > 0 and out[:20].sum() == 0 and out[21:].sum() == 0


@pytest.mark.parametrize("sigma", [5.0, 20.0])
def test_gaussian_noise_std_matches_sigma_in_grey_levels(sigma):
    out, rec = _run([{"type": "gaussian_noise", "sigma": sigma}], _flat(128), seed=1)
    noise = out.astype(np.float64) - 128
    assert noise.std() == pytest.approx(sigma, rel=0.02)
    assert abs(noise.mean()) < 0.2
    assert rec[0]["gray"] is False
    # colour noise: channels independent
    assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.02


def test_gray_noise_is_shared_by_the_three_channels():
    out, rec = _run([{"type": "gaussian_noise", "sigma": 10.0, "gray_prob": 1.0}], _flat(128))
    assert rec[0]["gray"] is True
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out.std() > 9


@pytest.mark.parametrize("level,scale", [(100, 1.0), (100, 2.0), (25, 1.0)])
def test_poisson_noise_variance_is_scale_squared_times_level(level, scale):
    out, _ = _run([{"type": "poisson_noise", "scale": scale}], _flat(level), seed=2)
    noise = out.astype(np.float64) - level
    assert noise.std() == pytest.approx(scale * np.sqrt(level), rel=0.03)
    assert abs(noise.mean()) < 0.3


def test_jpeg_error_decreases_as_quality_increases():
    img = _photo()
    errors = []
    for q in (10, 30, 50, 70, 90, 100):
        out, rec = _run([{"type": "jpeg", "quality": q}], img)
        assert rec[0]["quality"] == q
        errors.append(np.mean((out.astype(float) - img) ** 2))
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 20 and errors[-1] < 5


def test_resize_bicubic_to_quarter_is_exactly_matlab_imresize():
    img = _photo()
    out, rec = _run([{"type": "resize", "to_scale": 0.25}], img)
    np.testing.assert_array_equal(out, imresize(img, 0.25))
    assert rec[0]["size"] == [32, 32] and rec[0]["interpolation"] == "bicubic"


def test_resize_area_averages_blocks_and_to_scale_is_relative_to_the_input():
    img = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) * 10, np.ones((4, 4), np.uint8))
    img = np.repeat(img[..., None], 3, axis=2)  # 16x16 made of constant 4x4 blocks
    out, _ = _run([{"type": "resize", "to_scale": 0.25, "interpolation": "area"}], img)
    np.testing.assert_array_equal(out[..., 0], np.arange(16).reshape(4, 4) * 10)
    # a random intermediate resize does not change the final size
    steps = [
        {"type": "resize", "scale": [0.5, 1.5], "interpolation": ["bilinear", "nearest"]},
        {"type": "resize", "to_scale": 0.25, "interpolation": "area"},
    ]
    for seed in range(5):
        out, rec = _run(steps, _photo(64), seed)
        assert out.shape == (16, 16, 3)
        assert 0.5 <= rec[0]["scale"] <= 1.5 and rec[0]["interpolation"] in ("bilinear", "nearest")


def test_bilinear_upscale_by_two_interpolates_between_pixels():
    img = np.zeros((1, 2, 3), np.uint8)
    img[0, 1] = 200
    out, _ = _run([{"type": "resize", "scale": 2.0, "interpolation": "bilinear"}], img)
    assert out[0, :, 0].tolist() == [0, 50, 150, 200]  # OpenCV INTER_LINEAR (half-pixel centres)


# ----------------------------------------------------------------------------------------- pipeline
def test_same_seed_same_output_and_different_seed_different_output():
    pipe = default_pipeline()
    img = _photo()
    a, ra = pipe(img, np.random.default_rng(7))
    b, rb = pipe(img, np.random.default_rng(7))
    c, rc = pipe(img, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert ra == rb and rc != ra
    assert not np.array_equal(a, c)


def test_each_step_has_its_own_random_stream():
    noise = {"type": "gaussian_noise", "sigma": [1.0, 30.0]}
    a = _run([{"type": "gaussian_blur", "sigma_x": 1.0}, noise], _photo(32), seed=3)[1]
    b = _run(
        [{"type": "gaussian_blur", "sigma_x": [0.5, 2.5], "kernel_size": [7, 15]}, noise], _photo(32), 3
    )[1]
    assert a[1] == b[1]  # changing the blur step does not change what the noise step samples


def test_default_pipeline_is_blur_downscale_noise_jpeg_with_realesrgan_ranges():
    pipe = default_pipeline()
    assert [s["type"] for s in pipe.to_config()] == ["gaussian_blur", "resize", "one_of", "jpeg"]
    img = _photo(64)
    chosen = set()
    for seed in range(12):
        out, rec = pipe(img, np.random.default_rng(seed))
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8
        blur, resize, noise, jpeg = rec
        assert blur["kernel_size"] in range(7, 22, 2) and 0.2 <= blur["sigma_x"] <= 3.0
        assert resize["size"] == [16, 16] and resize["interpolation"] in ("area", "bilinear", "bicubic")
        chosen.add(noise["step"]["type"])
        assert 30 <= jpeg["quality"] <= 95
        json.dumps(rec)  # records are JSON-safe (they go to results)
    assert chosen == {"gaussian_noise", "poisson_noise"}


def test_config_round_trips_and_the_id_is_a_stable_hash_of_it():
    pipe = default_pipeline()
    again = DegradationPipeline.from_config(pipe.to_config())
    assert again.to_config() == pipe.to_config() and again.id == pipe.id
    assert len(pipe.id) == 16
    a = DegradationPipeline.from_config([{"type": "gaussian_noise", "sigma": 5}])
    b = DegradationPipeline.from_config([{"type": "gaussian_noise", "sigma": 5.0, "gray_prob": 0, "prob": 1}])
    c = DegradationPipeline.from_config([{"type": "gaussian_noise", "sigma": 6}])
    assert a.id == b.id != c.id  # defaults and int/float spelling do not matter; values do


def test_prob_zero_skips_a_step_and_records_it():
    img = _photo(32)
    out, rec = _run([{"type": "gaussian_noise", "sigma": 50.0, "prob": 0.0}], img)
    np.testing.assert_array_equal(out, img)
    assert rec == [{"type": "gaussian_noise", "applied": False}]


def test_one_of_respects_weights():
    steps = [
        {
            "type": "one_of",
            "weights": [0, 1],
            "options": [{"type": "gaussian_noise", "sigma": 5.0}, {"type": "jpeg", "quality": 50}],
        }
    ]
    for seed in range(5):
        assert _run(steps, _photo(16), seed)[1][0]["step"]["type"] == "jpeg"


def test_registry_knows_every_op():
    assert DEGRADATIONS is registry.DEGRADATIONS  # the one registry csrgan.registry holds
    assert {
        "gaussian_blur",
        "motion_blur",
        "gaussian_noise",
        "poisson_noise",
        "jpeg",
        "resize",
        "one_of",
    } <= set(DEGRADATIONS.names())


@pytest.mark.parametrize(
    "steps,fragments",
    [
        ([{"type": "sharpen"}], ["step 0", "unknown degradation 'sharpen'", "gaussian_blur", "jpeg"]),
        ([{"sigma": 1}], ["step 0", "missing `type`"]),
        (
            [{"type": "jpeg", "quality": 10}, {"type": "jpeg", "quality": 150}],
            ["step 1 (jpeg)", "'quality'", "<= 100"],
        ),
        ([{"type": "jpeg", "quality": [90, 30]}], ["step 0 (jpeg)", "'quality'", "lo <= hi"]),
        ([{"type": "jpeg", "quality": "high"}], ["'quality'", "must be a number"]),
        ([{"type": "gaussian_blur", "sigma_x": 1, "kernel_size": 8}], ["'kernel_size'", "odd"]),
        ([{"type": "gaussian_blur", "sigma_x": 0}], ["'sigma_x'", "> 0.0"]),
        ([{"type": "gaussian_blur"}], ["'sigma_x'", "required"]),
        ([{"type": "gaussian_blur", "sigma_x": 1, "isotropic_prob": 0.5}], ["'sigma_y'", "required"]),
        (
            [{"type": "gaussian_noise", "sigma": 1, "colour": True}],
            ["'colour'", "not a parameter", "gray_prob"],
        ),
        ([{"type": "resize", "scale": 0.5, "to_scale": 0.25}], ["step 0 (resize)", "exactly one"]),
        (
            [{"type": "resize", "to_scale": 0.25, "interpolation": "lanczos"}],
            ["'interpolation'", "lanczos", "area"],
        ),
        ([{"type": "gaussian_noise", "sigma": 1, "prob": 2}], ["'prob'", "<= 1.0"]),
        (
            [
                {"type": "jpeg", "quality": 50},
                {
                    "type": "one_of",
                    "options": [{"type": "gaussian_noise", "sigma": 1}, {"type": "poisson_noise"}],
                },
            ],
            ["step 1 (one_of).options[1] (poisson_noise)", "'scale'", "required"],
        ),
        ([{"type": "one_of", "options": [{"type": "jpeg", "quality": 5}], "weights": [1, 2]}], ["'weights'"]),
    ],
)
def test_bad_configs_name_the_step_and_the_parameter(steps, fragments):
    with pytest.raises(DegradationConfigError) as info:
        DegradationPipeline.from_config(steps)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_load_pipeline_accepts_a_list_or_a_steps_mapping_and_names_the_file_on_errors(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text(yaml.safe_dump([{"type": "jpeg", "quality": [40, 60]}]))
    assert load_pipeline(good).to_config()[0]["quality"] == [40, 60]
    good.write_text(yaml.safe_dump({"description": "x", "steps": [{"type": "jpeg", "quality": 50}]}))
    assert len(load_pipeline(good)) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stepz": []}))
    with pytest.raises(DegradationConfigError, match=r"bad\.yaml.*'stepz'"):
        load_pipeline(bad)
    with pytest.raises(DegradationConfigError, match="missing.yaml"):
        load_pipeline(tmp_path / "missing.yaml")


def test_pipeline_rejects_non_uint8_input():
    with pytest.raises(TypeError, match="uint8"):
        default_pipeline()(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))


def test_degrade_exact_requires_lr_to_be_hr_over_scale():
    pipe = DegradationPipeline.from_config([{"type": "jpeg", "quality": 80}])
    with pytest.raises(ValueError, match=r"not 8x8 \(HR / 4\).*to_scale: 0.25"):
        degrade_exact(pipe, _photo(32), 4, np.random.default_rng(0))


# ------------------------------------------------------------------------------------- folder + CLI
def _hr_folder(root: Path, names: list[str], size: int = 66) -> Path:
    rng = np.random.default_rng(0)
    for n in names:
        write_image(root / f"{n}.png", rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8))
    return root


def test_degrade_folder_writes_lr_and_records_keyed_by_file_name(tmp_path):
    hr = _hr_folder(tmp_path / "hr", ["a", "b"])
    recs = degrade_folder(hr, tmp_path / "lr", default_pipeline(), scale=4, seed=5)
    lr_a = read_image(tmp_path / "lr" / "a.png")
    assert lr_a.shape == (16, 17, 3)  # modcrop(66x70) = 64x68, / 4
    lines = [json.loads(x) for x in (tmp_path / "lr" / "degradations.jsonl").read_text().splitlines()]
    assert lines == recs and [r["file"] for r in lines] == ["a.png", "b.png"]
    assert lines[0]["hr_size"] == [64, 68] and lines[0]["pipeline_id"] == default_pipeline().id
    # adding an image does not change the others' degradations
    _hr_folder(tmp_path / "hr", ["0_first"])
    degrade_folder(hr, tmp_path / "lr2", default_pipeline(), scale=4, seed=5)
    np.testing.assert_array_equal(read_image(tmp_path / "lr2" / "a.png"), lr_a)


def test_cli_degrade_default_pipeline(tmp_path):
    hr = _hr_folder(tmp_path / "hr", ["x"])
    res = CliRunner().invoke(app, ["degrade", "--hr", str(hr), "--out", str(tmp_path / "lr"), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert read_image(tmp_path / "lr" / "x.png").shape == (16, 17, 3)
    assert (tmp_path / "lr" / "degradations.jsonl").is_file()


def test_cli_degrade_bad_pipeline_exits_2_naming_the_field(tmp_path):
    hr = _hr_folder(tmp_path / "hr", ["x"])
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump([{"type": "resize", "to_scale": 0.25}, {"type": "jpeg", "quality": 0}]))
    res = CliRunner().invoke(
        app, ["degrade", "--hr", str(hr), "--out", str(tmp_path / "lr"), "--pipeline", str(cfg)]
    )
    assert res.exit_code == 2
    assert "step 1 (jpeg)" in res.output and "'quality'" in res.output
    assert "Traceback" not in res.output


def test_cli_degrade_missing_hr_folder_exits_1(tmp_path):
    res = CliRunner().invoke(app, ["degrade", "--hr", str(tmp_path / "nope"), "--out", str(tmp_path / "lr")])
    assert res.exit_code == 1
    assert "error:" in res.output and "nope" in res.output and "Traceback" not in res.output
