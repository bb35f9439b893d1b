"""Spec for csrgan.data.datasets: aligned patches, worker-independent seeding, test sets, DIV2K layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from csrgan.data.datasets import (
    ImageFolder,
    PairedPatchDataset,
    TestSet,
    UnpairedPatchDataset,
    div2k_paths,
    match_lr_files,
)
from csrgan.data.io import ImageReadError, read_image, to_uint8, write_image
from csrgan.data.resize import imresize


def _rand(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _block_mean(hr: np.ndarray, s: int) -> np.ndarray:
    """LR whose pixel (i, j) is the rounded mean of HR block (i, j): invariant under flips/transposes."""
    h, w = hr.shape[0] // s, hr.shape[1] // s
    m = hr[: h * s, : w * s].reshape(h, s, w, s, 3).astype(np.float64).mean(axis=(1, 3))
    return np.floor(m + 0.5).astype(np.uint8)


@pytest.fixture
def paired(tmp_path: Path) -> tuple[Path, Path]:
    """HR images (some not multiples of 4) and DIV2K-named LR = 4x4 block means of the modcropped HR."""
    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    for i, (h, w) in enumerate([(64, 80), (50, 63), (96, 48)]):
        hr = _rand(h, w, i)
        write_image(hr_dir / f"{i:04d}.png", hr)
        write_image(lr_dir / f"{i:04d}x4.png", _block_mean(hr, 4))
    return hr_dir, lr_dir


def _as_uint8(t: torch.Tensor) -> np.ndarray:
    return to_uint8(t)


# ----------------------------------------------------------------------------------------- paired
def test_paired_patches_are_aligned_under_every_flip_and_rotation(paired):
    hr_dir, lr_dir = paired
    ds = PairedPatchDataset(hr_dir, scale=4, patch_size=32, lr_dir=lr_dir, augment=True, length=40)
    for i in range(len(ds)):
        s = ds[i]
        assert s["lr"].shape == (3, 8, 8) and s["hr"].shape == (3, 32, 32) and s["index"] == i
        assert s["lr"].dtype == torch.float32 and s["lr"].min() >= 0.0 and s["hr"].max() <= 1.0
        np.testing.assert_array_equal(_as_uint8(s["lr"]), _block_mean(_as_uint8(s["hr"]), 4))


def test_augmentation_produces_all_eight_orientations_and_can_be_switched_off(tmp_path):
    hr = np.zeros((8, 8, 3), np.uint8)
    hr[0, 1] = 255  # an asymmetric marker: its position reveals the dihedral transform
    write_image(tmp_path / "HR" / "a.png", hr)
    ds = PairedPatchDataset(tmp_path / "HR", scale=4, patch_size=8, length=200)
    seen = {tuple(np.argwhere(_as_uint8(ds[i]["hr"])[..., 0] == 255)[0]) for i in range(200)}
    assert len(seen) == 8
    plain = PairedPatchDataset(tmp_path / "HR", scale=4, patch_size=8, augment=False, length=20)
    assert all(_as_uint8(plain[i]["hr"])[0, 1, 0] == 255 for i in range(20))


def test_without_lr_dir_the_lr_is_matlab_bicubic_of_the_modcropped_hr(paired):
    hr_dir, _ = paired
    ds = PairedPatchDataset(hr_dir, scale=4, patch_size=16)
    lr, hr = ds.pair(1)  # 50x63 -> modcrop 48x60
    assert hr.shape == (48, 60, 3)
    np.testing.assert_array_equal(hr, read_image(hr_dir / "0001.png")[:48, :60])
    np.testing.assert_array_equal(lr, imresize(hr, output_shape=(12, 15)))


def test_samples_depend_only_on_seed_epoch_and_index(paired):
    hr_dir, lr_dir = paired
    make = lambda seed=0: PairedPatchDataset(hr_dir, 4, 16, lr_dir, length=12, seed=seed)  # noqa: E731
    a, b = make(), make()
    forward = [a[i]["hr"] for i in range(12)]
    backward = [b[i]["hr"] for i in reversed(range(12))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward, strict=True))
    a.set_epoch(1)
    assert not all(torch.equal(a[i]["hr"], forward[i]) for i in range(12))
    c = make(seed=1)
    assert not all(torch.equal(c[i]["hr"], forward[i]) for i in range(12))


def test_dataloader_workers_do_not_change_the_batches(paired):
    hr_dir, lr_dir = paired
    ds = PairedPatchDataset(hr_dir, 4, 16, lr_dir, length=8, seed=3)
    ref = [b["hr"] for b in DataLoader(ds, batch_size=4, num_workers=0)]
    par = [b["hr"] for b in DataLoader(ds, batch_size=4, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(ref, par, strict=True))


def test_length_cycles_over_the_images(paired):
    hr_dir, lr_dir = paired
    ds = PairedPatchDataset(hr_dir, 4, 16, lr_dir, length=7)
    assert len(ds) == 7 and len(PairedPatchDataset(hr_dir, 4, 16, lr_dir)) == 3
    with pytest.raises(IndexError):
        ds[7]


def test_patch_size_must_be_a_multiple_of_the_scale(paired):
    with pytest.raises(ValueError, match="multiple of scale 4"):
        PairedPatchDataset(paired[0], scale=4, patch_size=30)


def test_wrong_lr_size_is_an_error_naming_the_file(paired):
    hr_dir, lr_dir = paired
    write_image(lr_dir / "0002x4.png", _rand(10, 10, 9))
    ds = PairedPatchDataset(hr_dir, 4, 16, lr_dir, length=3)
    with pytest.raises(ValueError, match=r"0002x4\.png.*must be exactly 12x24"):
        ds[2]


def test_missing_or_orphan_lr_files_are_errors(paired):
    hr_dir, lr_dir = paired
    (lr_dir / "0001x4.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no LR image for .*0001\.png"):
        PairedPatchDataset(hr_dir, 4, 16, lr_dir)
    write_image(lr_dir / "0001x4.png", _rand(12, 15, 0))
    write_image(lr_dir / "9999x4.png", _rand(12, 15, 0))
    with pytest.raises(ValueError, match=r"9999x4\.png"):
        PairedPatchDataset(hr_dir, 4, 16, lr_dir)


def test_a_truncated_png_is_an_error_naming_the_file(paired):
    hr_dir, _ = paired
    target = hr_dir / "0001.png"
    target.write_bytes(target.read_bytes()[:200])
    ds = PairedPatchDataset(hr_dir, 4, 16, length=3)
    ds[0]
    with pytest.raises(ImageReadError, match=r"0001\.png"):
        ds[1]
    with pytest.raises(ImageReadError, match=r"0001\.png"):
        list(TestSet("t", hr_dir))


def test_image_too_small_for_the_patch_names_the_file(paired):
    ds = PairedPatchDataset(paired[0], 4, 64, length=3)
    with pytest.raises(ValueError, match=r"0001\.png.*smaller than the LR patch"):
        ds[1]


# --------------------------------------------------------------------------------------- unpaired
def test_unpaired_patches_shape_seeding_and_size_check(tmp_path):
    for i in range(2):
        write_image(tmp_path / f"r{i}.png", _rand(40, 50, i))
    ds = UnpairedPatchDataset(tmp_path, patch_size=24, length=6, seed=2)
    s = ds[3]
    assert s["image"].shape == (3, 24, 24) and s["index"] == 3
    assert torch.equal(UnpairedPatchDataset(tmp_path, 24, length=6, seed=2)[3]["image"], s["image"])
    ds.set_epoch(4)
    assert not torch.equal(ds[3]["image"], s["image"])
    with pytest.raises(ValueError, match=r"r1\.png.*smaller than the patch"):
        UnpairedPatchDataset(tmp_path, patch_size=45)[1]


def test_image_folder_cache_keeps_decoded_images(tmp_path):
    write_image(tmp_path / "a.png", _rand(8, 8, 0))
    cached, uncached = ImageFolder(tmp_path, cache=True), ImageFolder(tmp_path)
    first = cached[0]
    uncached[0]
    (tmp_path / "a.png").unlink()
    np.testing.assert_array_equal(cached[0], first)
    with pytest.raises(ImageReadError, match=r"a\.png"):
        uncached[0]
    assert cached.names == ["a"]


# -------------------------------------------------------------------------------------------- test sets
def test_testset_modcrops_hr_and_makes_bicubic_lr(paired):
    ts = TestSet("mine", paired[0])
    assert ts.has_hr and len(ts) == 3 and ts.names == ["0000", "0001", "0002"]
    name, lr, hr = ts[1]
    assert name == "0001" and hr.shape == (48, 60, 3)
    np.testing.assert_array_equal(lr, imresize(hr, 0.25))


def test_testset_checks_given_lr_sizes(paired):
    hr_dir, lr_dir = paired
    items = list(TestSet("mine", hr_dir, lr_dir))
    np.testing.assert_array_equal(items[0][1], read_image(lr_dir / "0000x4.png"))
    write_image(lr_dir / "0000x4.png", _rand(16, 21, 0))
    with pytest.raises(ValueError, match=r"0000x4\.png.*must be exactly 20x16"):
        TestSet("mine", hr_dir, lr_dir)[0]


def test_testset_on_set5_and_set14_matches_benchmark_naming(shared_datasets):
    set5 = TestSet("Set5", shared_datasets / "Set5" / "HR", shared_datasets / "Set5" / "LR_bicubic_x4")
    assert set5.names == ["baby", "bird", "butterfly", "head", "woman"]
    name, lr, hr = set5[3]
    assert lr.shape == (70, 70, 3) and hr.shape == (280, 280, 3)
    # the shipped MATLAB LR equals our bicubic LR (resize.py reproduces it bit for bit)
    np.testing.assert_array_equal(lr, TestSet("Set5", shared_datasets / "Set5" / "HR")[3][1])
    set14 = TestSet("Set14", shared_datasets / "Set14" / "HR", shared_datasets / "Set14" / "LR_bicubic_x4")
    assert len(set14) == 14 and set14.lr_paths[0].name == "img_001_SRF_4_LR.png"
    _, lr, hr = set14[2]  # bridge: grayscale file, read as RGB
    assert lr.shape[2] == 3 and lr.shape[:2] == (hr.shape[0] // 4, hr.shape[1] // 4)


def test_no_reference_testset_has_no_hr(shared_datasets):
    ts = TestSet("RealSRSet", None, shared_datasets / "RealSRSet+5images" / "LR_real")
    assert not ts.has_hr and len(ts) == 25
    name, lr, hr = ts[0]
    assert name == "00003" and hr is None and lr.dtype == np.uint8


def test_testset_needs_some_folder():
    with pytest.raises(ValueError, match="hr_dir, lr_dir"):
        TestSet("empty", None, None)


def test_match_lr_files_accepts_the_common_naming_schemes(tmp_path):
    for n in ["a.png", "bx4.png", "c_x4.png", "img_004_SRF_4_LR.png"]:
        write_image(tmp_path / "LR" / n, _rand(2, 2, 0))
    hr = [Path(n) for n in ["a.png", "b.png", "c.png", "img_004_SRF_4_HR.png"]]
    assert [p.name for p in match_lr_files(hr, tmp_path / "LR", 4)] == [
        "a.png",
        "bx4.png",
        "c_x4.png",
        "img_004_SRF_4_LR.png",
    ]


# ------------------------------------------------------------------------------------------------ DIV2K
def test_div2k_paths_know_the_official_layout(tmp_path):
    p = div2k_paths(tmp_path)
    assert p.train_hr == tmp_path / "DIV2K_train_HR"
    assert p.valid_hr == tmp_path / "DIV2K_valid_HR"
    assert p.train_lr_bicubic == tmp_path / "DIV2K_train_LR_bicubic" / "X4"
    assert p.valid_lr_unknown == tmp_path / "DIV2K_valid_LR_unknown" / "X4"
    assert p.lr("train", "unknown") == tmp_path / "DIV2K_train_LR_unknown" / "X4"
    assert len(p.missing()) == 6
    p.train_hr.mkdir()
    assert p.train_hr not in p.missing()
    with pytest.raises(ValueError, match="known: bicubic, unknown"):
        p.lr("train", "mild")
    with pytest.raises(ValueError, match="known: train, valid"):
        p.hr("test")
