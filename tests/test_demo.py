"""Spec for csrgan.data.demo: an offline, deterministic, idempotent demo set with unpaired domains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import csrgan
from csrgan.cli.data import app
from csrgan.data.datasets import PairedPatchDataset, TestSet, UnpairedPatchDataset
from csrgan.data.degradations import default_pipeline
from csrgan.data.demo import TEST_SOURCES, TRAIN_SOURCES, build_demo, demo_layout
from csrgan.data.io import list_images, read_image
from csrgan.data.resize import imresize

SMALL = {"real_crops_per_image": 3}  # fewer real-LR crops keep the tests quick; the layout is the same


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo") / "set"
    return root, build_demo(root, seed=0, **SMALL)


def _overlap(a: list[int], b: list[int]) -> bool:
    (t1, l1, h1, w1), (t2, l2, h2, w2) = a, b
    return t1 < t2 + h2 and t2 < t1 + h1 and l1 < l2 + w2 and l2 < l1 + w1


def test_layout_and_sizes(demo):
    root, manifest = demo
    lay = demo_layout(root)
    assert len(list_images(lay.train_hr)) == 3
    assert len(list_images(lay.train_lr_real)) == 3 * 3
    for img_path in list_images(lay.train_hr):
        h, w = read_image(img_path).shape[:2]
        assert h % 4 == 0 and w % 4 == 0 and min(h, w) >= 256  # room for 256-px HR / 64-px LR patches
    for img_path in list_images(lay.train_lr_real):
        assert read_image(img_path).shape == (64, 64, 3)
    for kind in ("bicubic", "unknown"):
        hr_names = [p.name for p in list_images(lay.test_hr(kind))]
        assert hr_names == [p.name for p in list_images(lay.test_lr(kind))] and len(hr_names) == 4
    assert manifest["counts"] == {"train_hr": 3, "train_lr_real": 9, "test_images": 4}


def test_test_sets_share_hr_and_differ_in_how_the_lr_was_made(demo):
    root, _ = demo
    lay = demo_layout(root)
    bic = TestSet("bicubic", lay.test_hr("bicubic"), lay.test_lr("bicubic"))
    unk = TestSet("unknown", lay.test_hr("unknown"), lay.test_lr("unknown"))
    for (n1, lr_b, hr_b), (n2, lr_u, hr_u) in zip(bic, unk, strict=True):
        assert n1 == n2
        np.testing.assert_array_equal(hr_b, hr_u)
        np.testing.assert_array_equal(lr_b, imresize(hr_b, 0.25))  # MATLAB bicubic x4
        assert lr_u.shape == lr_b.shape and not np.array_equal(lr_u, lr_b)


def test_domains_are_unpaired_and_test_photos_are_held_out(demo):
    _, manifest = demo
    files = manifest["files"]
    train_sources = {f["source"] for f in files if f["role"].startswith("train")}
    test_sources = {f["source"] for f in files if f["role"].startswith("test")}
    assert train_sources == set(TRAIN_SOURCES) and test_sources == set(TEST_SOURCES)
    for src in TRAIN_SOURCES:
        hr_boxes = [f["box"] for f in files if f["role"] == "train_hr" and f["source"] == src]
        real_boxes = [f["box"] for f in files if f["role"] == "train_lr_real" and f["source"] == src]
        assert len(hr_boxes) == 1 and real_boxes
        assert not any(_overlap(hr_boxes[0], b) for b in real_boxes), src


def test_manifest_records_provenance(demo):
    root, manifest = demo
    s = manifest["settings"]
    assert s["seed"] == 0 and s["csrgan_version"] == csrgan.__version__ and s["scale"] == 4
    assert s["pipeline"]["id"] == default_pipeline().id
    assert s["pipeline"]["config"] == default_pipeline().to_config()
    assert set(s["sources"]["sha256"]) == set(TRAIN_SOURCES) | set(TEST_SOURCES)
    real = [f for f in manifest["files"] if f["role"] == "train_lr_real"]
    assert all(f["degradation"][-1]["type"] == "jpeg" for f in real)
    assert json.loads(demo_layout(root).manifest.read_text()) == manifest


def test_same_seed_same_files_other_seed_other_files(demo, tmp_path):
    _, manifest = demo
    again = build_demo(tmp_path / "again", seed=0, **SMALL)
    other = build_demo(tmp_path / "other", seed=1, **SMALL)
    digests = lambda m: {f["path"]: f["sha256"] for f in m["files"]}  # noqa: E731
    assert digests(again) == digests(manifest)
    assert digests(other) != digests(manifest)
    # the held-out HR does not depend on the seed; the unknown LR does
    hr, lr = "test/bicubic/HR/chelsea_left.png", "test/unknown/LR/chelsea_left.png"
    assert digests(other)[hr] == digests(manifest)[hr]
    assert digests(other)[lr] != digests(manifest)[lr]


def test_rebuilding_is_skipped_when_the_manifest_matches_and_redone_when_not(tmp_path, capsys):
    root = tmp_path / "d"
    first = build_demo(root, seed=0, **SMALL)
    hr = next(demo_layout(root).train_hr.glob("coffee_*.png"))
    mtime = hr.stat().st_mtime_ns
    assert build_demo(root, seed=0, **SMALL) == first
    assert hr.stat().st_mtime_ns == mtime and "up to date" in capsys.readouterr().err

    hr.write_bytes(b"damaged")
    assert build_demo(root, seed=0, **SMALL) == first  # a damaged file triggers a rebuild...
    assert read_image(hr).ndim == 3  # ...that restores it
    second = build_demo(root, seed=2, **SMALL)
    assert second["settings"]["seed"] == 2 and len(list_images(demo_layout(root).train_lr_real)) == 9


def test_refuses_to_write_into_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("not a demo set")
    with pytest.raises(FileExistsError, match="no demo manifest"):
        build_demo(tmp_path, seed=0)


def test_the_demo_feeds_the_datasets(demo):
    root, _ = demo
    lay = demo_layout(root)
    pairs = PairedPatchDataset(lay.train_hr, scale=4, patch_size=96, length=4)
    assert pairs[3]["hr"].shape == (3, 96, 96) and pairs[3]["lr"].shape == (3, 24, 24)
    assert UnpairedPatchDataset(lay.train_lr_real, patch_size=64)[0]["image"].shape == (3, 64, 64)


def test_cli_demo(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "3 train HR images, 36 real-LR images, 4 test images" in res.output
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--seed", "-1"])
    assert res.exit_code == 2
