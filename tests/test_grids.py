"""Spec of the labelled comparison grids (``csrgan.grids``) and where they are written.

SR grids: ``LR (nearest) | bicubic | SR (this model) | HR``, a caption and a title row, per-image PSNR
that equals the metrics table's value, a fixed size, and images that rotate with the evaluation.
Degradation grids: ``bicubic LR (x) | G(x) (learned) | real LR (y)`` with PSNR vs x / vs y.
The numbers are checked on what the functions return next to the image (no OCR); the image is checked
to hold the right crops at the reported cell positions and ink in the caption and title bands.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from csrgan import evaluation, grids
from csrgan.config import TestSetConfig as SetConfig
from csrgan.config import validate_config
from csrgan.data.io import read_image, to_tensor, to_uint8, write_image
from csrgan.data.resize import imresize
from csrgan.evaluation import evaluate_bicubic, evaluate_sr_model
from csrgan.grids import (
    CELL,
    DEGRADATION_COLUMNS,
    GRID_CROP,
    MIN_CELL,
    DegradationImage,
    Grid,
    SRImage,
    degradation_grid,
    eval_round,
    rotation,
    run_caption,
    sr_grid,
)
from csrgan.metrics import evaluate_image, psnr

SCALE = 4
SR_COLUMNS = ("LR (nearest)", "bicubic", "SR (this model)", "HR")


# ------------------------------------------------------------------------------------------- helpers
def _hr(name: str, h: int, w: int) -> np.ndarray:
    img = getattr(skimage.data, name)()
    return np.ascontiguousarray(img[:h, :w])


def _sr_image(name: str, h: int, w: int) -> SRImage:
    """HR crop, its MATLAB-bicubic LR, and a bilinear "model" output (not bicubic, so PSNRs differ)."""
    hr = _hr(name, h, w)
    lr = imresize(hr, scale=1 / SCALE)
    return SRImage(name, lr, _bilinear_u8(lr), hr, position="image 1/1")


def _bilinear_u8(lr: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(_bilinear(to_tensor(lr)))[0]


def _bilinear(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=SCALE, mode="bilinear", align_corners=False).clamp(0, 1)


def _cell(grid: Grid, r: int, c: int, shape: tuple[int, ...]) -> np.ndarray:
    y, x = grid.cell_origins[(r, c)]
    return grid.image[y : y + shape[0], x : x + shape[1]]


def _has_ink(band: np.ndarray) -> bool:
    """Dark text pixels (the background is white, cells are not in these bands)."""
    return bool((band.min(axis=2) < 100).any())


def _write_set(root: Path, specs: list[tuple[str, int, int]]) -> SetConfig:
    for name, h, w in specs:
        write_image(root / "HR" / f"{name}.png", _hr(name, h, w))
    return SetConfig(name="mini", hr=str(root / "HR"))


class _Spy:
    """Wraps a grid builder and keeps every Grid it returned (the numbers drawn in the PNG)."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.fn, self.grids = fn, []

    def __call__(self, *args, **kwargs) -> Grid:  # type: ignore[no-untyped-def]
        grid = self.fn(*args, **kwargs)
        self.grids.append(grid)
        return grid


# -------------------------------------------------------------------------------------- SR grid
def test_sr_grid_has_four_labelled_columns_and_one_row_per_image() -> None:
    imgs = [_sr_image("astronaut", 200, 240), _sr_image("coffee", 160, 200), _sr_image("chelsea", 96, 96)]
    grid = sr_grid(imgs, SCALE, caption="Set | step 10 | trial-7 | gan | p=0.5")
    assert grid.columns == SR_COLUMNS
    assert grid.rows == ("astronaut", "coffee", "chelsea")
    assert set(grid.cell_origins) == {(r, c) for r in range(3) for c in range(4)}
    assert grid.image.dtype == np.uint8 and grid.image.ndim == 3 and grid.image.shape[2] == 3
    # columns left to right, rows top to bottom, none overlapping
    for r in range(3):
        xs = [grid.cell_origins[(r, c)][1] for c in range(4)]
        assert xs == sorted(xs) and min(np.diff(xs)) >= CELL
    ys = [grid.cell_origins[(r, 0)][0] for r in range(3)]
    assert ys == sorted(ys) and min(np.diff(ys)) >= CELL
    assert grid.caption.startswith("Set | step 10 | trial-7 | gan | p=0.5")


def test_sr_grid_cells_are_the_same_region_of_lr_bicubic_sr_and_hr() -> None:
    img = _sr_image("astronaut", 200, 240)
    grid = sr_grid([img], SCALE)
    ys, xs = grids.center_crop(img.sr, GRID_CROP, SCALE)
    assert (ys.stop - ys.start, xs.stop - xs.start) == (GRID_CROP, GRID_CROP)
    lr = img.lr[ys.start // SCALE : ys.stop // SCALE, xs.start // SCALE : xs.stop // SCALE]
    expected = [
        np.repeat(np.repeat(lr, SCALE, axis=0), SCALE, axis=1),  # nearest: the LR's own pixels
        imresize(img.lr, scale=SCALE)[ys, xs],
        img.sr[ys, xs],
        img.hr[ys, xs],
    ]
    for c, want in enumerate(expected):
        np.testing.assert_array_equal(_cell(grid, 0, c, want.shape), want, err_msg=SR_COLUMNS[c])


def test_sr_grid_size_is_fixed_whatever_the_image_size() -> None:
    small = sr_grid([_sr_image("chelsea", 64, 80), _sr_image("coffee", 96, 96)], SCALE, caption="x")
    large = sr_grid([_sr_image("astronaut", 400, 480), _sr_image("rocket", 300, 420)], SCALE, caption="x")
    assert small.image.shape == large.image.shape
    h, w = large.image.shape[:2]
    assert 4 * CELL < w < 4 * CELL + 160 and 2 * CELL < h < 2 * CELL + 160  # ~128 px cells, modest


def test_caption_and_column_titles_are_drawn() -> None:
    grid = sr_grid([_sr_image("coffee", 160, 200)], SCALE, caption="Set | step 3 | run | pretrain")
    y0, y1 = grid.caption_rows
    assert y1 > y0 and _has_ink(grid.image[y0:y1])
    t0, t1 = grid.title_rows
    assert t0 >= y1 and t1 > t0
    for c in range(4):  # a title above every column
        x = grid.cell_origins[(0, c)][1]
        assert _has_ink(grid.image[t0:t1, x : x + CELL]), SR_COLUMNS[c]
    # between the title band and the first cell nothing else is drawn: the bands are where the text is
    assert not _has_ink(grid.image[t1 + 1 : grid.cell_origins[(0, 0)][0] - 1])


def test_psnr_under_the_cells_is_the_protocol_value_of_the_whole_image() -> None:
    imgs = [_sr_image("astronaut", 200, 240), _sr_image("coffee", 160, 200)]
    grid = sr_grid(imgs, SCALE)
    for img, values in zip(imgs, grid.values, strict=True):
        assert values["sr_psnr"] == evaluate_image(img.sr, img.hr, SCALE, ("psnr",))["psnr"]
        assert values["bicubic_psnr"] == psnr(imresize(img.lr, scale=SCALE), img.hr, crop_border=SCALE)
        assert values["sr_psnr"] != values["bicubic_psnr"]  # two different upscalers, two numbers


def test_bicubic_cache_follows_the_image_contents() -> None:
    """The bicubic cell is cached by content: another HR with the same shape gets its own PSNR."""
    a = _sr_image("astronaut", 160, 160)
    b_hr = _hr("coffee", 160, 160)
    b = SRImage("b", a.lr, a.sr, b_hr)  # same LR, other HR
    first, second, again = (sr_grid([x], SCALE).values[0]["bicubic_psnr"] for x in (a, b, a))
    assert first == again == psnr(imresize(a.lr, scale=SCALE), a.hr, SCALE)
    assert second == psnr(imresize(a.lr, scale=SCALE), b_hr, SCALE) != first


def test_no_reference_images_get_no_psnr_and_an_empty_hr_cell() -> None:
    img = _sr_image("coffee", 160, 200)
    grid = sr_grid([SRImage("real", img.lr, img.sr, None)], SCALE)
    assert grid.values == ({"bicubic_psnr": None, "sr_psnr": None},)
    y, x = grid.cell_origins[(0, 3)]
    assert grid.image[y + 10, x + 10].tolist() == [224, 224, 224]  # the grey box, no image


# ------------------------------------------------------------------------------- evaluate_sr_model
def test_evaluate_sr_model_writes_the_labelled_grid_with_the_tables_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = _write_set(tmp_path / "set", [("astronaut", 200, 240), ("coffee", 160, 200)])
    spy = _Spy(grids.sr_grid)
    monkeypatch.setattr(evaluation, "sr_grid", spy)
    got = evaluate_sr_model(
        _bilinear, [ts], SCALE, ["psnr"], None, "cpu", grid_dir=tmp_path / "g", step=30, grid_images=2,
        caption="trial-7 | gan | p=0.5 lr_source=cyclegan",
    )  # fmt: skip
    (grid,) = spy.grids
    assert grid.columns == SR_COLUMNS and grid.rows == ("astronaut", "coffee")
    assert grid.caption.startswith("mini | step 30 | trial-7 | gan | p=0.5 lr_source=cyclegan")
    # the mean of the drawn per-image PSNRs is the table's value: same protocol, same images
    assert np.mean([v["sr_psnr"] for v in grid.values]) == pytest.approx(got["mini/psnr"], abs=1e-12)
    written = read_image(tmp_path / "g" / "mini_step30.png")
    np.testing.assert_array_equal(written, grid.image)


def test_grey_hr_files_are_scored_with_the_grey_rule_in_the_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "HR").mkdir()
    Image.fromarray(np.ascontiguousarray(skimage.data.camera()[:160, :200])).save(tmp_path / "HR" / "cam.png")
    ts = SetConfig(name="grey", hr=str(tmp_path / "HR"))
    spy = _Spy(grids.sr_grid)
    monkeypatch.setattr(evaluation, "sr_grid", spy)
    got = evaluate_sr_model(_bilinear, [ts], SCALE, ["psnr"], None, "cpu", grid_dir=tmp_path, grid_images=1)
    assert spy.grids[0].values[0]["sr_psnr"] == got["grey/psnr"]
    assert spy.grids[0].values[0]["bicubic_psnr"] == evaluate_bicubic([ts], SCALE, ["psnr"])["grey/psnr"]


def test_bicubic_baseline_grid_has_no_model_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ts = _write_set(tmp_path / "set", [("coffee", 160, 200)])
    spy = _Spy(grids.sr_grid)
    monkeypatch.setattr(evaluation, "sr_grid", spy)
    got = evaluate_bicubic([ts], SCALE, ["psnr"], grid_dir=tmp_path / "g", step=0)
    assert spy.grids[0].columns == ("LR (nearest)", "bicubic", "HR")
    assert spy.grids[0].values[0] == {"bicubic_psnr": got["mini/psnr"]}
    assert (tmp_path / "g" / "mini_step0.png").is_file()


# -------------------------------------------------------------------------------------- rotation
@pytest.mark.parametrize(("n", "count"), [(5, 2), (7, 3), (4, 4), (3, 5), (1, 2), (14, 2)])
def test_rotation_shows_every_image_within_ceil_n_over_count_rounds(n: int, count: int) -> None:
    rounds = [rotation(n, count, r) for r in range(math.ceil(n / count))]
    assert all(len(r) == min(count, n) == len(set(r)) for r in rounds)
    assert set().union(*rounds) == set(range(n))
    assert rotation(n, count, 3) == rotation(n, count, 3)  # deterministic
    assert rotation(n, 0, 3) == [] and rotation(0, count, 3) == []


def test_eval_round_counts_evaluations_including_an_off_cadence_last_one() -> None:
    assert [eval_round(s, 4) for s in (4, 8, 10)] == [0, 1, 2]
    assert [eval_round(s, 1) for s in (1, 2, 3)] == [0, 1, 2]
    assert eval_round(0, 4) == 0


def test_grids_of_successive_evaluations_cover_every_test_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = [(name, 64, 64) for name in ("astronaut", "coffee", "chelsea", "rocket", "cat")]
    ts = _write_set(tmp_path / "set", specs)
    spy = _Spy(grids.sr_grid)
    monkeypatch.setattr(evaluation, "sr_grid", spy)
    every = 10
    steps = [every * k for k in range(1, 4)]  # ceil(5 / 2) = 3 evaluations
    for step in steps:
        evaluate_sr_model(
            _bilinear, [ts], SCALE, ["psnr"], None, "cpu", grid_dir=tmp_path / "g", step=step, grid_images=2,
            grid_round=eval_round(step, every),
        )  # fmt: skip
    shown = [g.rows for g in spy.grids]
    assert shown == [("astronaut", "cat"), ("chelsea", "coffee"), ("rocket", "astronaut")]  # name order
    assert set().union(*map(set, shown)) == {name for name, _, _ in specs}
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [f"mini_step{s}.png" for s in steps]


# ------------------------------------------------------------------------------------ degradation
def _degradation_image(name: str) -> DegradationImage:
    hr = _hr(name, 128, 160)
    x = imresize(hr, scale=1 / SCALE)
    rng = np.random.default_rng(0)
    y = np.clip(x.astype(float) + rng.normal(0, 6, x.shape), 0, 255).round().astype(np.uint8)
    g = np.clip(x.astype(float) * 0.9 + 10, 0, 255).round().astype(np.uint8)
    return DegradationImage(name, x, g, y, "image 1/2")


def test_degradation_grid_is_labelled_with_psnr_vs_x_and_vs_y() -> None:
    imgs = [_degradation_image("astronaut"), _degradation_image("coffee")]
    grid = degradation_grid(imgs, SCALE, caption="realset | step 5 | run | cyclegan")
    assert grid.columns == DEGRADATION_COLUMNS and grid.rows == ("astronaut", "coffee")
    assert _has_ink(grid.image[slice(*grid.caption_rows)]) and _has_ink(grid.image[slice(*grid.title_rows)])
    for img, v in zip(imgs, grid.values, strict=True):
        assert v["g_vs_x_psnr"] == psnr(img.g, img.x, crop_border=0)
        assert v["g_vs_y_psnr"] == psnr(img.g, img.y, crop_border=0)
        assert v["x_vs_y_psnr"] == psnr(img.x, img.y, crop_border=0)
    # tiny LR crops are upscaled (nearest) to a legible size: 32 LR px -> 128 px
    side = GRID_CROP // SCALE
    ys, xs = grids.center_crop(imgs[0].x, side, 1)
    f = grids.display_factor(side)
    assert side * f >= MIN_CELL
    want = np.repeat(np.repeat(imgs[0].g[ys, xs], f, axis=0), f, axis=1)
    np.testing.assert_array_equal(_cell(grid, 0, 1, want.shape), want)


class _Invert(torch.nn.Module):
    """A known "G" for the loop test: 1 - x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - x


def test_degradation_stage_writes_rotating_labelled_grids(tmp_path: Path) -> None:
    from csrgan.train.context import LocalContext
    from csrgan.train.cyclegan import CycleGANLoop

    names = ["astronaut", "coffee", "chelsea"]
    for k, name in enumerate(names):
        write_image(tmp_path / "hr" / f"{k}.png", _hr(name, 96, 96))
        write_image(tmp_path / "real" / f"{k}.png", _hr(name, 24, 24))
        write_image(tmp_path / "test_hr" / f"{name}.png", _hr(name, 128, 160))
        write_image(tmp_path / "test_lr" / f"{name}.png", _degradation_image(name).y)
    cfg = validate_config({
        "name": "g", "seed": 0,
        "data": {"train_hr": str(tmp_path / "hr"), "real_lr": str(tmp_path / "real"), "scale": SCALE,
                 "test_sets": [{"name": "realset", "hr": str(tmp_path / "test_hr"),
                                "lr": str(tmp_path / "test_lr"), "degradation": "real"}]},
        "cyclegan": {"learner": "cyclegan", "generator": {"type": "resnet", "ngf": 8, "n_blocks": 1},
                     "discriminator": {"type": "patchgan", "ndf": 8, "n_layers": 2}, "patch_size": 16,
                     "batch_size": 1, "iters": 10, "eval_every": 5},
        "eval": {"grid_images": 2},
    })  # fmt: skip
    ctx = LocalContext(tmp_path / "out" / "cyclegan")
    loop = CycleGANLoop(cfg, ctx)
    for step, order in ((5, ["astronaut", "chelsea"]), (10, ["coffee", "astronaut"])):  # name order, rotated
        loop.step = step
        loop._write_grids(_Invert())
        written = read_image(ctx.out_dir / "grids" / f"cyclegan_realset_step{step}.png")
        rows = []
        for name in order:
            x = imresize(read_image(tmp_path / "test_hr" / f"{name}.png"), scale=1 / SCALE)
            y = read_image(tmp_path / "test_lr" / f"{name}.png")
            rows.append(DegradationImage(name, x, 255 - x, y, f"image {sorted(names).index(name) + 1}/3"))
        caption = f"realset | step {step} | " + run_caption(ctx.out_dir, "cyclegan", {"learner": "cyclegan"})
        np.testing.assert_array_equal(written, degradation_grid(rows, SCALE, caption).image)


# --------------------------------------------------------------------------------------- captions
def test_run_caption_names_the_trial_or_the_run() -> None:
    assert run_caption(Path("/s/_trials/ab12"), "gan", {"p": 0.5, "lr_source": "cyclegan"}) == (
        "ab12 | gan | p=0.5 lr_source=cyclegan"
    )
    assert run_caption(Path("runs/quick/pretrain"), "pretrain", {}) == "quick | pretrain"


def test_sr_trainer_captions_its_grids_and_rotates_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from csrgan.train.context import LocalContext
    from csrgan.train.srgan import SRLoop

    for k in range(2):
        write_image(tmp_path / "train" / f"{k}.png", _hr("astronaut", 64, 64))
    ts = _write_set(tmp_path / "test", [(name, 64, 64) for name in ("astronaut", "coffee", "chelsea")])
    cfg = validate_config({
        "name": "t", "seed": 5,
        "data": {"train_hr": str(tmp_path / "train"), "scale": SCALE,
                 "test_sets": [ts.model_dump(mode="json")]},
        "sr": {"generator": {"channels": 8, "n_blocks": 1}, "pretrain": {"iters": 4}, "batch_size": 1,
               "patch_size": 32, "eval_every": 2, "mix_prob": 0.0},
        "eval": {"metrics": ["psnr"], "grid_images": 2},
    })  # fmt: skip
    ctx = LocalContext(tmp_path / "runs" / "quick" / "pretrain")
    loop = SRLoop(cfg, ctx, "pretrain")
    spy = _Spy(grids.sr_grid)
    monkeypatch.setattr(evaluation, "sr_grid", spy)
    for step in (2, 4):
        loop.step = step
        loop.evaluate()
    assert [g.caption.split("\n")[0] for g in spy.grids] == [
        f"mini | step {s} | quick | pretrain | p=0 seed=5" for s in (2, 4)
    ]
    assert [g.rows for g in spy.grids] == [("astronaut", "chelsea"), ("coffee", "astronaut")]
    assert (ctx.out_dir / "grids" / "pretrain" / "mini_step4.png").is_file()
