"""A corpus of bad inputs: each exits 2 naming the file or field, before Ray starts, having written nothing.

Every case is one small change to a good experiment (its own data folders, no demo set): a config file,
a data folder, an image or a command-line argument. The good experiment itself reaches Ray (the guard
below stops it there), so each case is refused by the check it is about, not by an accident of setup.
``csrgan sweep`` is run for real (not ``--dry-run``); the dry run gets the same answers (last tests).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from csrgan.cli.app import app

runner = CliRunner()


# ------------------------------------------------------------------------------------------- the world
def _png(path: Path, w: int, h: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """Good data: 4 HR training images, 4 real-LR images, a test set of 2 HR/LR pairs (x4)."""
    d = tmp_path / "data"
    for i in range(4):
        _png(d / "train_hr" / f"im{i}.png", 128, 112, i)
        _png(d / "real_lr" / f"r{i}.png", 48, 40, 10 + i)
    for i in range(2):
        _png(d / "test" / "HR" / f"t{i}.png", 64, 48, 20 + i)
        _png(d / "test" / "LR" / f"t{i}.png", 16, 12, 30 + i)
    work = tmp_path / "work"
    work.mkdir()
    return {"root": tmp_path, "data": d, "work": work, "storage": tmp_path / "storage"}


def good_config(w: dict[str, Path]) -> dict[str, Any]:
    d = w["data"]
    return {
        "name": "corpus",
        "storage": str(w["storage"]),
        "data": {
            "train_hr": str(d / "train_hr"),
            "real_lr": str(d / "real_lr"),
            "test_sets": [{"name": "bench", "hr": str(d / "test" / "HR"), "lr": str(d / "test" / "LR")}],
        },
        "cyclegan": {"iters": 10, "patch_size": 24, "eval_every": 10, "checkpoint_every": 10},
        "sr": {
            "generator": {"channels": 8, "n_blocks": 1},
            "discriminator": {"channels": 8},
            "pretrain": {"iters": 4},
            "gan": {"iters": 4, "content": {"type": "mse"}},
            "batch_size": 2,
            "patch_size": 32,
        },
        "eval": {"metrics": ["psnr", "ssim"]},
        "search": {
            "method": "grid",
            "metric": {"name": "bench/psnr"},
            "parameters": {"sr.mix_prob": {"values": [0.0, 1.0]}},
        },
    }


class ReachedRay(Exception):
    """Raised instead of starting Ray: the command got past every check."""


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*a: Any, **k: Any) -> None:
        raise ReachedRay("ensure_ray was called")

    monkeypatch.setattr("csrgan.train.ray_train.ensure_ray", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no weights here, whatever the host has


def snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def run_cli(w: dict[str, Path], args: list[str]) -> Any:
    cwd = os.getcwd()
    os.chdir(w["work"])
    try:
        return runner.invoke(app, args)
    finally:
        os.chdir(cwd)


# ----------------------------------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class Case:
    id: str
    expect: tuple[str, ...]  # substrings of the message: the field / file named
    edit: Callable[[dict[str, Any], dict[str, Path]], None] = lambda cfg, w: None
    text: Callable[[str], bytes] | None = None  # rewrite the YAML file's bytes
    args: tuple[str, ...] = ()  # extra CLI arguments
    config_path: Callable[[Path, dict[str, Path]], Path] | None = None


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _data(w: dict[str, Path], *parts: str) -> Path:
    return w["data"].joinpath(*parts)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _only(folder: Path, keep: Callable[[Path], None] | None = None) -> None:
    for p in folder.iterdir():
        p.unlink()
    if keep is not None:
        keep(folder)


def _float_tiff(path: Path) -> None:
    Image.fromarray(np.ones((112, 128), np.float32) / 2).save(path)


def _duplicate_parameter(text: str) -> bytes:
    return text.replace(
        "parameters:\n", "parameters:\n    sr.mix_prob:\n      values: [0.25]\n", 1
    ).encode()


def _alias_bomb(text: str) -> bytes:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return (text + "bomb:\n" + "\n".join("  " + ln for ln in lines) + "\n").encode()


CASES: list[Case] = [
    # --- the file itself
    Case("yaml-duplicate-search-parameter", ("corpus.yaml", "duplicate key", "sr.mix_prob", "line"),
         text=_duplicate_parameter),
    Case("yaml-duplicate-top-level-key", ("corpus.yaml", "duplicate key 'name'"),
         text=lambda t: (t + "name: again\n").encode()),
    Case("yaml-not-utf8", ("corpus.yaml", "not UTF-8", "line"),
         text=lambda t: t.encode().replace(b"corpus", b"corp\xe9s", 1)),
    Case("yaml-alias-bomb", ("corpus.yaml", "expands", "alias"), text=_alias_bomb),
    Case("yaml-too-large", ("corpus.yaml", "MiB"),
         text=lambda t: (t + "#" + "x" * (2 << 20) + "\n").encode()),
    Case("yaml-empty", ("corpus.yaml", "empty"), text=lambda t: b""),
    Case("yaml-top-level-list", ("corpus.yaml", "mapping"), text=lambda t: b"- name: corpus\n"),
    Case("yaml-syntax", ("corpus.yaml", "not valid YAML", "line"),
         text=lambda t: t.encode() + b"sr: [1, 2\n"),
    Case("config-missing", ("nope.yaml", "not found"), config_path=lambda p, w: p.with_name("nope.yaml")),
    Case("config-is-a-folder", ("folder",), config_path=lambda p, w: w["data"]),
    Case("seeds-empty", ("search.seeds",), edit=lambda c, w: _set(c, "search.seeds", [])),
    # --- data folders and images
    Case("train-hr-missing", ("data.train_hr", "folder not found", "nowhere"),
         edit=lambda c, w: _set(c, "data.train_hr", str(_data(w, "nowhere")))),
    Case("train-hr-empty", ("data.train_hr", "no images", "(empty)"),
         edit=lambda c, w: _only(_data(w, "train_hr"))),
    Case("train-hr-only-non-images", ("data.train_hr", "no images", "notes.txt"),
         edit=lambda c, w: _only(_data(w, "train_hr"), lambda f: (f / "notes.txt").write_text("x"))),
    Case("train-hr-only-a-truncated-png", ("data.train_hr", "im0.png"),
         edit=lambda c, w: (_only(_data(w, "train_hr"), lambda f: _png(f / "im0.png", 128, 112)),
                            _truncate(_data(w, "train_hr", "im0.png")))),
    Case("train-hr-one-truncated-among-good", ("data.train_hr", "im2.png"),
         edit=lambda c, w: _truncate(_data(w, "train_hr", "im2.png"))),
    Case("train-hr-one-1x1-among-good", ("data.train_hr", "tiny.png", "1x1", "smaller"),
         edit=lambda c, w: _png(_data(w, "train_hr", "tiny.png"), 1, 1)),
    Case("train-hr-smaller-than-the-sr-patch", ("data.train_hr", "sr.patch_size", "128x112"),
         edit=lambda c, w: _set(c, "sr.patch_size", 128)),
    Case("train-hr-is-a-file", ("data.train_hr", "is a file"),
         edit=lambda c, w: _set(c, "data.train_hr", str(_data(w, "train_hr", "im0.png")))),
    Case("train-hr-float-image", ("data.train_hr", "f.tif", "mode 'F'"),
         edit=lambda c, w: _float_tiff(_data(w, "train_hr", "f.tif"))),
    Case("real-lr-smaller-than-the-cyclegan-patch", ("data.real_lr", "cyclegan.patch_size", "48x40"),
         edit=lambda c, w: (_set(c, "cyclegan.patch_size", 44), _set(c, "sr.patch_size", 32))),
    Case("real-lr-missing", ("data.real_lr", "folder not found"),
         edit=lambda c, w: _set(c, "data.real_lr", str(_data(w, "gone")))),
    Case("test-lr-not-hr-over-scale", ("data.test_sets[bench].lr", "t1.png", "must be 16x12"),
         edit=lambda c, w: _png(_data(w, "test", "LR", "t1.png"), 17, 12)),
    Case("test-hr-missing", ("data.test_sets[bench].hr", "folder not found"),
         edit=lambda c, w: c["data"]["test_sets"][0].update(hr=str(_data(w, "test", "HR_gone")))),
    Case("test-lr-orphan", ("data.test_sets[bench].lr", "extra.png", "has no HR"),
         edit=lambda c, w: _png(_data(w, "test", "LR", "extra.png"), 16, 12)),
    Case("test-lr-missing-a-pair", ("data.test_sets[bench].lr", "no LR image for t1.png"),
         edit=lambda c, w: _data(w, "test", "LR", "t1.png").unlink()),
    Case("test-hr-too-small-for-the-metric-crop", ("data.test_sets[bench].hr", "8x8", "metric crop"),
         edit=lambda c, w: (_png(_data(w, "test", "HR", "t9.png"), 8, 8),
                            _png(_data(w, "test", "LR", "t9.png"), 2, 2))),
    Case("paired-lr-wrong-size", ("data.train_lr", "im0.png", "must be 32x28"),
         edit=lambda c, w: (
             [_png(_data(w, "train_lr", f"im{i}.png"), 32 if i else 31, 28) for i in range(4)],
             _set(c, "data.train_lr", str(_data(w, "train_lr"))),
             _set(c, "sr.lr_source", "paired"))),
    Case("grid-reaches-a-patch-larger-than-the-images",
         ("data.train_hr", "sr.patch_size", "smaller than 128"),
         edit=lambda c, w: _set(c, "search.parameters", {"sr.patch_size": {"values": [32, 128]}})),
    Case("two-problems-listed-at-once", ("2 problem(s)", "data.train_hr", "data.test_sets[bench].hr"),
         edit=lambda c, w: (_set(c, "data.train_hr", str(_data(w, "x"))),
                            c["data"]["test_sets"][0].update(hr=str(_data(w, "y"))))),
    # --- silently wrong before
    Case("metric-on-a-set-without-hr", ("search.metric.name", "no `hr`"),
         edit=lambda c, w: c["data"]["test_sets"][0].pop("hr")),
    Case("metric-not-evaluated", ("search.metric.name", "eval.metrics"),
         edit=lambda c, w: _set(c, "search.metric.name", "bench/ssim") or _set(c, "eval.metrics", ["psnr"])),
    # --- storage, demo, weights
    Case("storage-is-a-file", ("storage", "is a file"),
         edit=lambda c, w: (_data(w, "file").write_text("x"), _set(c, "storage", str(_data(w, "file"))))),
    Case("demo-dir-not-empty-without-manifest", ("data.demo.dir", "manifest.json"),
         edit=lambda c, w: (c.update(data={"demo": {"dir": str(w["data"])}}),
                            _set(c, "search.metric.name", "unknown/psnr"))),
    Case("vgg-content-loss-without-weights", ("weights.vgg19", "vgg19-dcbb9e9d.pth"),
         edit=lambda c, w: _set(c, "sr.gan.content", {"type": "vgg"})),
    Case("lpips-without-weights", ("eval.lpips", "alexnet", "eval.lpips.optional"),
         edit=lambda c, w: _set(c, "eval.metrics", ["psnr", "ssim", "lpips"])),
    Case("resources-more-cpus-than-the-embedded-cluster", ("resources", "needs 3 CPU", "has 2 CPU"),
         edit=lambda c, w: _set(c, "resources", {"workers": 2, "cpus_per_worker": 1}),
         args=("--num-cpus", "2")),
    Case("resources-more-gpus-than-the-machine", ("resources", "64 GPU"),
         edit=lambda c, w: _set(c, "resources", {"gpus_per_worker": 64})),
    # --- command line
    Case("set-unknown-key", ("sr.mixprob",), args=("--set", "sr.mixprob=0.5")),
    Case("set-without-equals", ("--set", "key=value"), args=("--set", "sr.mix_prob")),
    Case("set-out-of-range", ("sr.mix_prob",), args=("--set", "sr.mix_prob=2")),
    Case("resume-without-state", ("--resume", "no sweep state"), args=("--resume",)),
    Case("storage-option-is-a-file", ("storage", "is a file"), args=("--storage", "__FILE__")),
    Case("num-cpus-with-address", ("--num-cpus", "--address"), args=("--address", "auto", "--num-cpus", "2")),
    Case("num-cpus-zero", ("--num-cpus",), args=("--num-cpus", "0")),
]  # fmt: skip


def write_case(case: Case, w: dict[str, Path]) -> tuple[Path, list[str]]:
    cfg = copy.deepcopy(good_config(w))
    case.edit(cfg, w)
    path = w["root"] / "cfg" / "corpus.yaml"
    path.parent.mkdir(exist_ok=True)
    text = yaml.safe_dump(cfg, sort_keys=False)
    path.write_bytes(case.text(text) if case.text else text.encode())
    if case.config_path is not None:
        path = case.config_path(path, w)
    args = [a if a != "__FILE__" else str(_data(w, "train_hr", "im0.png")) for a in case.args]
    return path, args


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


def test_the_good_experiment_reaches_ray(world: dict[str, Path]) -> None:
    """The baseline: without a fault, the checks pass and the sweep goes on to start Ray."""
    path, _ = write_case(Case("good", ()), world)
    res = run_cli(world, ["sweep", str(path)])
    assert isinstance(res.exception, ReachedRay), (res.exit_code, res.output)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_exits_2_naming_it_and_writes_nothing(case: Case, world: dict[str, Path]) -> None:
    path, args = write_case(case, world)
    before = snapshot(world["root"])
    t0 = time.perf_counter()
    res = run_cli(world, ["sweep", str(path), *args])
    elapsed = time.perf_counter() - t0
    assert not isinstance(res.exception, ReachedRay), f"{case.id}: got past the checks to Ray"
    assert res.exit_code == 2, (case.id, res.exit_code, res.output, res.exception)
    msg = res.stderr
    for part in case.expect:
        assert part in msg, f"{case.id}: {part!r} not in:\n{msg}"
    assert "Traceback" not in res.output
    assert len(msg) < 6000, f"{case.id}: the message echoes too much ({len(msg)} chars)"
    assert snapshot(world["root"]) == before, f"{case.id}: something was written"
    assert not world["storage"].exists()
    assert elapsed < 60, f"{case.id}: {elapsed:.0f} s (a bound on runaway work, not a benchmark)"


DRY_RUN_KINDS = ("train-hr", "test-", "storage-is", "vgg", "yaml-dup", "resources")


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith(DRY_RUN_KINDS)], ids=lambda c: c.id)
def test_the_dry_run_gives_the_same_answer(case: Case, world: dict[str, Path]) -> None:
    path, args = write_case(case, world)
    before = snapshot(world["root"])
    res = run_cli(world, ["sweep", str(path), "--dry-run", *args])
    assert res.exit_code == 2, (case.id, res.output)
    for part in case.expect:
        assert part in res.stderr
    assert snapshot(world["root"]) == before


@pytest.mark.parametrize(
    ("stage", "case_id"),
    [("srgan", "train-hr-one-truncated-among-good"), ("cyclegan", "real-lr-smaller-than-the-cyclegan-patch"),
     ("srgan", "test-lr-not-hr-over-scale")],
)  # fmt: skip
def test_csrgan_train_checks_its_inputs_first(stage: str, case_id: str, world: dict[str, Path]) -> None:
    case = next(c for c in CASES if c.id == case_id)
    path, _ = write_case(case, world)
    before = snapshot(world["root"])
    extra = ["--set", "sr.mix_prob=0"] if stage == "srgan" else []
    out = str(world["root"] / "out")
    res = run_cli(world, ["train", stage, str(path), "--workers", "0", "--out", out, *extra])
    assert res.exit_code == 2, (res.output, res.exception)
    for part in case.expect:
        assert part in res.stderr
    assert snapshot(world["root"]) == before


def test_check_data_decodes_large_folders_too(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the decode threshold only headers are read (a truncated file passes); --check-data decodes."""
    monkeypatch.setattr("csrgan.data.check.DECODE_PIXELS", 0)
    _truncate(_data(world, "train_hr", "im1.png"))
    path, _ = write_case(Case("big", ()), world)
    res = run_cli(world, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 0, res.output
    res = run_cli(world, ["sweep", str(path), "--dry-run", "--check-data"])
    assert res.exit_code == 2 and "im1.png" in res.stderr, res.output


def test_an_interrupted_demo_build_is_not_refused(world: dict[str, Path]) -> None:
    """A demo folder holding only a half-made build is resumed by build_demo, so the checks accept it."""
    demo = world["root"] / "demo"
    (demo / ".csrgan-demo-building" / "train").mkdir(parents=True)
    path, _ = write_case(
        Case("demo", (), edit=lambda c, w: (c.update(data={"demo": {"dir": str(demo)}}),
                                            _set(c, "search.metric.name", "unknown/psnr"))),
        world,
    )  # fmt: skip
    res = run_cli(world, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 0, res.output
