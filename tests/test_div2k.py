"""Spec for csrgan.data.div2k against a loopback HTTP server serving tiny DIV2K-shaped archives."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import LoopbackHTTPServer
from PIL import Image
from typer.testing import CliRunner

from csrgan.cli.data import app
from csrgan.data.datasets import PairedPatchDataset, div2k_paths
from csrgan.data.div2k import (
    ArchiveError,
    DownloadError,
    div2k_archives,
    download_div2k,
    download_file,
    read_checksums,
    sha256_file,
)
from csrgan.data.io import read_image


def _png(seed: int, h: int, w: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        dirs = sorted({str(p) + "/" for n in members for p in Path(n).parents if str(p) != "."})
        for d in dirs:
            zf.writestr(d, b"")
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A folder laid out like the DIV2K site: 2 train / 1 valid image per archive, 32x32 HR, 8x8 LR."""
    site = tmp_path / "site"
    site.mkdir()
    for split, ids in (("train", [1, 2]), ("valid", [801])):
        _zip(site / f"DIV2K_{split}_HR.zip", {f"DIV2K_{split}_HR/{i:04d}.png": _png(i, 32, 32) for i in ids})
        for track in ("bicubic", "unknown"):
            _zip(
                site / f"DIV2K_{split}_LR_{track}_X4.zip",
                {f"DIV2K_{split}_LR_{track}/X4/{i:04d}x4.png": _png(i + 1000, 8, 8) for i in ids},
            )
    return site


def test_archive_names_follow_the_official_site():
    names = [a.filename for a in div2k_archives(["train", "valid"], ["bicubic", "unknown"])]
    assert names == [
        "DIV2K_train_HR.zip",
        "DIV2K_train_LR_bicubic_X4.zip",
        "DIV2K_train_LR_unknown_X4.zip",
        "DIV2K_valid_HR.zip",
        "DIV2K_valid_LR_bicubic_X4.zip",
        "DIV2K_valid_LR_unknown_X4.zip",
    ]
    with pytest.raises(ValueError, match="known: bicubic, unknown"):
        div2k_archives(["train"], ["mild"])


def test_download_extracts_the_div2k_layout_and_is_idempotent(mirror, tmp_path):
    root = tmp_path / "div2k"
    with LoopbackHTTPServer(mirror) as srv:
        paths = download_div2k(root, ["bicubic", "unknown"], ["train", "valid"], srv.url, progress=False)
        assert srv.count(method="GET") == 6
        assert sorted(p.name for p in paths.train_hr.iterdir()) == ["0001.png", "0002.png"]
        assert sorted(p.name for p in paths.valid_lr_unknown.iterdir()) == ["0801x4.png"]
        assert paths.missing() == []
        with zipfile.ZipFile(mirror / "DIV2K_train_LR_bicubic_X4.zip") as zf:
            want = zf.read("DIV2K_train_LR_bicubic/X4/0002x4.png")
        assert (paths.train_lr_bicubic / "0002x4.png").read_bytes() == want
        sums = read_checksums(root / "archives" / "SHA256SUMS")
        assert sums["DIV2K_valid_HR.zip"] == sha256_file(mirror / "DIV2K_valid_HR.zip")

        download_div2k(root, splits=["train", "valid"], base_url=srv.url, progress=False)
        assert srv.count(method="GET") == 6  # nothing fetched again

    # the extracted layout feeds the paired dataset directly
    ds = PairedPatchDataset(paths.train_hr, 4, 16, lr_dir=paths.train_lr_bicubic)
    assert ds[0]["lr"].shape == (3, 4, 4)


def test_a_deleted_folder_is_extracted_again_from_the_kept_archive(mirror, tmp_path):
    root = tmp_path / "div2k"
    with LoopbackHTTPServer(mirror) as srv:
        paths = download_div2k(root, tracks=["bicubic"], splits=["valid"], base_url=srv.url, progress=False)
        (paths.valid_hr / "0801.png").unlink()
        download_div2k(root, tracks=["bicubic"], splits=["valid"], base_url=srv.url, progress=False)
        assert srv.count(method="GET") == 2
    assert read_image(paths.valid_hr / "0801.png").shape == (32, 32, 3)


def test_resumes_a_truncated_part_file_with_a_range_request(mirror, tmp_path):
    data = (mirror / "DIV2K_train_HR.zip").read_bytes()
    dest = tmp_path / "out" / "DIV2K_train_HR.zip"
    dest.parent.mkdir()
    Path(str(dest) + ".part").write_bytes(data[:1000])
    with LoopbackHTTPServer(mirror) as srv:
        download_file(srv.url_for("DIV2K_train_HR.zip"), dest, progress=False)
        assert [r.range for r in srv.requests] == ["bytes=1000-"]
        assert srv.requests[0].status == 206
    assert dest.read_bytes() == data
    assert not Path(str(dest) + ".part").exists()


def test_a_dropped_connection_is_resumed_automatically(tmp_path):
    (tmp_path / "site").mkdir()
    data = np.random.default_rng(0).bytes(300_000)
    (tmp_path / "site" / "big.zip").write_bytes(data)
    dest = tmp_path / "big.zip"
    with LoopbackHTTPServer(tmp_path / "site", drop_first_after=200_000) as srv:
        download_file(srv.url_for("big.zip"), dest, progress=False, sleep=lambda s: None)
        first, second = srv.requests
    assert first.range is None
    resumed_at = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 200_000 and second.status == 206  # bytes already on disk were kept
    assert dest.read_bytes() == data


def test_a_server_without_range_support_restarts_from_zero(mirror, tmp_path):
    data = (mirror / "DIV2K_train_HR.zip").read_bytes()
    dest = tmp_path / "DIV2K_train_HR.zip"
    Path(str(dest) + ".part").write_bytes(b"garbage that must not survive")
    with LoopbackHTTPServer(mirror, support_range=False) as srv:
        download_file(srv.url_for("DIV2K_train_HR.zip"), dest, progress=False)
    assert dest.read_bytes() == data


def test_http_errors_name_the_url(tmp_path):
    with LoopbackHTTPServer(tmp_path) as srv, pytest.raises(DownloadError, match=r"nope\.zip: HTTP 404"):
        download_file(srv.url_for("nope.zip"), tmp_path / "x.zip", progress=False)


def _corrupt(path: Path) -> None:
    """Flip bytes inside the first member's data (the zip directory stays readable)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if not i.is_dir())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    raw[start : start + 16] = bytes(b ^ 0xFF for b in raw[start : start + 16])
    path.write_bytes(bytes(raw))


def test_a_corrupted_archive_is_a_clear_error_and_nothing_is_extracted(mirror, tmp_path):
    _corrupt(mirror / "DIV2K_valid_HR.zip")
    root = tmp_path / "div2k"
    with LoopbackHTTPServer(mirror) as srv, pytest.raises(ArchiveError) as info:
        download_div2k(root, tracks=["bicubic"], splits=["valid"], base_url=srv.url, progress=False)
    msg = str(info.value)
    assert "DIV2K_valid_HR.zip" in msg and "CRC" in msg and "0801.png" in msg and "delete" in msg
    assert not div2k_paths(root).valid_hr.exists()


def test_a_truncated_archive_is_not_a_zip(mirror, tmp_path):
    bad = mirror / "DIV2K_valid_HR.zip"
    bad.write_bytes(bad.read_bytes()[:-60])  # the central directory is gone
    with LoopbackHTTPServer(mirror) as srv, pytest.raises(ArchiveError, match="not a valid zip"):
        download_div2k(tmp_path / "d", tracks=["bicubic"], splits=["valid"], base_url=srv.url, progress=False)


def test_checksum_manifest_is_enforced(mirror, tmp_path):
    good = {n: sha256_file(mirror / n) for n in ("DIV2K_valid_HR.zip", "DIV2K_valid_LR_bicubic_X4.zip")}
    manifest = tmp_path / "SUMS"
    manifest.write_text("".join(f"{h}  {n}\n" for n, h in good.items()))
    with LoopbackHTTPServer(mirror) as srv:
        download_div2k(tmp_path / "ok", ["bicubic"], ["valid"], srv.url, checksums=manifest, progress=False)
        manifest.write_text(f"{'0' * 64}  DIV2K_valid_HR.zip\n{good['DIV2K_valid_LR_bicubic_X4.zip']}  x\n")
        with pytest.raises(ArchiveError, match="no entry for: DIV2K_valid_LR_bicubic_X4.zip"):
            download_div2k(tmp_path / "bad", ["bicubic"], ["valid"], srv.url, manifest, progress=False)
        manifest.write_text("".join(f"{'0' * 64}  {n}\n" for n in good))
        with pytest.raises(ArchiveError, match=r"DIV2K_valid_HR\.zip: sha256 .* does not match"):
            download_div2k(tmp_path / "bad", ["bicubic"], ["valid"], srv.url, manifest, progress=False)


def test_members_outside_the_expected_folder_are_not_extracted(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _zip(site / "DIV2K_valid_HR.zip", {"DIV2K_valid_HR/0801.png": _png(0, 8, 8), "evil/../../x.txt": b"x"})
    with LoopbackHTTPServer(site) as srv, pytest.raises(ArchiveError, match="unsafe member path"):
        download_div2k(tmp_path / "d", [], ["valid"], srv.url, progress=False)
    _zip(site / "DIV2K_valid_HR.zip", {"DIV2K_valid_HR/0801.png": _png(0, 8, 8), "README.txt": b"hi"})
    (tmp_path / "d" / "archives" / "DIV2K_valid_HR.zip").unlink()
    with LoopbackHTTPServer(site) as srv:
        download_div2k(tmp_path / "d", [], ["valid"], srv.url, progress=False)
    assert (tmp_path / "d" / "DIV2K_valid_HR" / "0801.png").is_file()
    assert not (tmp_path / "d" / "README.txt").exists()


def test_cli_download(mirror, tmp_path):
    root = tmp_path / "div2k"
    with LoopbackHTTPServer(mirror) as srv:
        args = [
            "download",
            "div2k",
            "--root",
            str(root),
            "--tracks",
            "unknown",
            "--splits",
            "valid",
            "--base-url",
            srv.url,
            "--no-progress",
        ]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        assert str(div2k_paths(root).valid_lr_unknown) in res.output
        assert not div2k_paths(root).valid_lr_bicubic.exists()

        res = CliRunner().invoke(app, [*args[:4], "--tracks", "mild"])
        assert res.exit_code == 2 and "--tracks" in res.output and "mild" in res.output

        res = CliRunner().invoke(app, ["download", "imagenet", "--root", str(root)])
        assert res.exit_code == 2 and "div2k" in res.output

        _corrupt(mirror / "DIV2K_train_HR.zip")
        res = CliRunner().invoke(app, [*args[:4], "--splits", "train", "--base-url", srv.url])
        assert res.exit_code == 1
        assert "error:" in res.output and "DIV2K_train_HR.zip" in res.output and "Traceback" not in res.output
