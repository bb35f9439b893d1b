"""`csrgan evaluate`: the user-facing path to the protocol, end to end through the CLI.

The numbers are the published bicubic x4 values (../shared/datasets/SOURCES.md): Set5 28.42 / 0.8104,
Set14 26.00 / 0.7027, within ±0.02 dB and ±0.002, with LR made from HR by our MATLAB bicubic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from csrgan.cli.app import app
from csrgan.metrics import PROTOCOL
from csrgan.registry import METRICS

runner = CliRunner()


def evaluate(*args: str):
    return runner.invoke(app, ["evaluate", *args])


@pytest.mark.parametrize(("name", "psnr", "ssim"), [("Set5", 28.42, 0.8104), ("Set14", 26.00, 0.7027)])
def test_bicubic_from_hr_reproduces_published_numbers(
    shared_datasets: Path, name: str, psnr: float, ssim: float
) -> None:
    res = evaluate(
        "--method", "bicubic", "--hr", str(shared_datasets / name / "HR"), "--scale", "4", "--json"
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["mean"]["psnr"] == pytest.approx(psnr, abs=0.02)
    assert out["mean"]["ssim"] == pytest.approx(ssim, abs=0.002)
    assert out["protocol"] == PROTOCOL.id
    assert out["lr"] == "bicubic-from-hr"
    assert len(out["images"]) == out["n"] == {"Set5": 5, "Set14": 14}[name]


def test_grayscale_file_is_scored_as_grey(shared_datasets: Path) -> None:
    """Set14 `bridge` is a 1-channel file: the CLI must score it like the MATLAB grey pipeline (resize
    and PSNR on the 2-D image), not as an RGB expansion on Y (which adds ~1.3 dB)."""
    import numpy as np
    from PIL import Image

    from csrgan.data.resize import imresize
    from csrgan.metrics import psnr

    path = next((shared_datasets / "Set14" / "HR").glob("img_003*"))
    gray = np.asarray(Image.open(path))
    assert gray.ndim == 2
    expected = psnr(imresize(imresize(gray, 1 / 4), 4), gray, 4)

    res = evaluate("--hr", str(shared_datasets / "Set14" / "HR"), "--json")
    images = {r["name"]: r for r in json.loads(res.output)["images"]}
    assert images[path.stem]["psnr"] == pytest.approx(expected, abs=1e-9)


def test_shipped_lr_table_output(shared_datasets: Path) -> None:
    res = evaluate(
        "--hr", str(shared_datasets / "Set5" / "HR"), "--lr", str(shared_datasets / "Set5" / "LR_bicubic_x4")
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["image", "psnr", "ssim"]
    mean = next(line for line in lines if line.startswith("mean")).split()
    assert float(mean[1]) == pytest.approx(28.42, abs=0.02)


def test_lpips_with_explicit_random_backbone_is_recorded(shared_datasets: Path) -> None:
    res = evaluate(
        "--hr", str(shared_datasets / "Set5" / "HR"), "--metrics", "psnr,lpips", "--random-lpips", "--json"
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert all(r["lpips"] is not None and r["lpips"] > 0 for r in out["images"])
    assert "random" in out["lpips_weights"]


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub.set_dir(old)


def test_missing_lpips_weights_is_an_actionable_error(shared_datasets: Path, empty_torch_home: Path) -> None:
    res = evaluate("--hr", str(shared_datasets / "Set5" / "HR"), "--metrics", "psnr,lpips")
    assert res.exit_code == 1
    assert "alexnet-owt-7be5be79.pth" in res.output
    assert "csrgan weights download alexnet" in res.output
    assert "Traceback" not in res.output


def test_optional_lpips_leaves_the_column_empty_and_says_so_once(
    shared_datasets: Path, empty_torch_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    res = evaluate(
        "--hr", str(shared_datasets / "Set5" / "HR"), "--metrics", "psnr,lpips", "--lpips-optional", "--json"
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    assert out["mean"]["lpips"] is None and all(r["lpips"] is None for r in out["images"])
    assert out["mean"]["psnr"] == pytest.approx(28.42, abs=0.02)
    assert (res.output + capfd.readouterr().err).count("LPIPS DISABLED") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--method", "nearest", "--hr", "x"],
        ["--metrics", "psnr,fid", "--hr", "x"],
        ["--method", "model", "--hr", "x"],
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    res = evaluate(*args)
    assert res.exit_code == 2
    assert "error:" in res.output


def test_unknown_metric_lists_the_registered_ones() -> None:
    res = evaluate("--metrics", "psnr,fid", "--hr", "x")
    assert res.exit_code == 2
    assert "'fid'" in res.output
    assert f"choose from {', '.join(METRICS.names())}" in res.output


def test_missing_folder_exits_1(tmp_path: Path) -> None:
    res = evaluate("--hr", str(tmp_path / "nope"))
    assert res.exit_code == 1
    assert "nope" in res.output
