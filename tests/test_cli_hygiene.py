"""CLI hygiene: a cheap ``--help`` / ``--version``, "did you mean" on typos, weights messages that name
options and keys that exist where the user is, said once per process.

The start-up itself is measured by benchmarks/cli_startup.py; here it is checked structurally: building
the click command and printing every ``--help`` imports none of the heavy libraries.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

import csrgan
from csrgan.cli.app import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]

#: What ``--help`` must not import (seconds each: torch ~3-8 s here, Ray, pandas + pyarrow, the schema).
HEAVY = ("torch", "torchvision", "ray", "pandas", "pyarrow", "matplotlib", "scipy", "lpips", "csrgan.config")

_PROBE = """
import json, sys
import typer.main
from csrgan.cli.app import app

heavy = json.loads(sys.argv[1])

def paths(cmd, prefix=()):
    yield prefix
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from paths(sub, (*prefix, name))

cmd = typer.main.get_command(app)
after_build = sorted(m for m in heavy if m in sys.modules)
helped = []
for path in [*paths(cmd), ("--version",)]:
    args = [*path, "--help"] if path != ("--version",) else ["--version"]
    try:
        app(args, prog_name="csrgan", standalone_mode=False)
    except SystemExit:
        pass
    helped.append(" ".join(args))
print(json.dumps({"after_build": after_build, "after_help": sorted(m for m in heavy if m in sys.modules),
                  "commands": sorted(cmd.commands), "helped": helped}))
"""


def _probe() -> dict[str, Any]:
    """In a fresh interpreter: build the click command, then run every ``--help`` and ``--version``."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


# ----------------------------------------------------------------------------------------- start-up
def test_help_of_every_command_imports_no_heavy_library() -> None:
    out = _probe()
    assert out["after_build"] == [], f"building the CLI imported {out['after_build']}"
    assert out["after_help"] == [], f"--help / --version imported {out['after_help']}"
    visited = set(out["helped"])
    assert {"sweep --help", "results summary --help", "data download --help", "--version"} <= visited
    assert len(out["helped"]) > 15  # every group and sub-command was visited


def test_version_prints_csrgan_version_and_exits_0() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert first.startswith(f"csrgan {csrgan.__version__} ")
    import importlib.metadata

    assert f"torch {importlib.metadata.version('torch')}" in first


def test_export_command_is_mounted() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "export" in res.output
    assert "export" in typer.main.get_command(app).commands
    res = runner.invoke(app, ["export", "--help"])
    assert res.exit_code == 0, res.output


def test_literal_choices_equal_the_library_definitions() -> None:
    """csrgan.names holds literals so that --help imports no torch; they must not drift."""
    from csrgan import names
    from csrgan import weights as W
    from csrgan.data.datasets import DIV2K_SPLITS, DIV2K_TRACKS
    from csrgan.metrics import METRIC_NAMES

    assert names.METRIC_NAMES == METRIC_NAMES
    assert (names.DIV2K_SPLITS, names.DIV2K_TRACKS) == (DIV2K_SPLITS, DIV2K_TRACKS)
    assert tuple(W.SPECS) == names.WEIGHTS_DOWNLOADABLE
    assert tuple(n for n, s in W.SPECS.items() if s.in_all) == names.WEIGHTS_IN_ALL
    assert tuple(W.known_names()) == names.WEIGHTS_KNOWN


# ------------------------------------------------------------------------------------ did you mean
def _experiment(tmp_path: Path, **sr: Any) -> Path:
    """experiments/quickstart.yaml with ``sr`` keys added and storage under tmp_path."""
    from csrgan.config import load_raw

    raw = load_raw(REPO / "experiments" / "quickstart.yaml")
    raw["storage"] = str(tmp_path / "results")
    raw["sr"].update(sr)
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


def test_unknown_field_in_the_experiment_file_suggests_the_field(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", str(_experiment(tmp_path, mixprob=0.5)), "--dry-run"])
    assert res.exit_code == 2, res.output
    assert "sr.mixprob: Extra inputs are not permitted (got 0.5); did you mean sr.mix_prob?" in res.output


def test_unknown_set_path_suggests_the_field(tmp_path: Path) -> None:
    exp = str(_experiment(tmp_path))
    res = runner.invoke(app, ["train", "srgan", exp, "--set", "sr.gan.adv_weigth=0.01", "--workers", "0"])
    assert res.exit_code == 2, res.output
    assert "sr.gan.adv_weigth" in res.output and "did you mean sr.gan.adv_weight?" in res.output


def test_unknown_key_without_a_close_match_lists_the_section_keys(tmp_path: Path) -> None:
    exp = str(_experiment(tmp_path))
    res = runner.invoke(app, ["sweep", exp, "--set", "eval.lpips.weights=x", "--dry-run"])
    assert res.exit_code == 2, res.output
    assert "eval.lpips.weights" in res.output
    assert "the keys of eval.lpips are: net, source, random_backbone, optional" in res.output


def test_searched_path_typo_suggests_the_field() -> None:
    from csrgan.config import ConfigError, load_raw, validate_config

    raw = load_raw(REPO / "experiments" / "quickstart.yaml")
    raw["search"]["arms"][1] = {"sr.lr_sorce": "cyclegan", "sr.mix_prob": 0.5}
    with pytest.raises(ConfigError) as err:
        validate_config(raw, "x.yaml")
    expected = "'sr.lr_sorce' is not a config field (no 'lr_sorce'); did you mean 'sr.lr_source'?"
    assert expected in str(err.value)


def test_unknown_field_in_a_list_item_and_a_far_typo() -> None:
    from pydantic import ValidationError

    from csrgan.config import ExperimentConfig, format_validation_error

    test_sets = [{"name": "a", "hr": "h", "max_image": 3}]
    raw = {"name": "x", "data": {"demo": {}, "test_sets": test_sets}, "srr": {}}
    with pytest.raises(ValidationError) as err:
        ExperimentConfig.model_validate(raw)
    text = format_validation_error("x.yaml", err.value)
    assert "data.test_sets.0.max_image: Extra inputs are not permitted (got 3); did you mean " in text
    assert "data.test_sets.0.max_images?" in text
    assert "- srr: Extra inputs are not permitted; did you mean sr?" in text


def _results(tmp_path: Path) -> str:
    from csrgan.results import ResultsStore

    store = ResultsStore(tmp_path, "mix")
    for p in (0.0, 1.0):
        row = {"seed": 0, "phase": "gan", "step": 10, "test_set": "bicubic", "psnr": 25.0 + p, "ssim": 0.7,
               "wall_s": 1.0, "device_s": 1.0, "config_hash": "c", "protocol": "p", "weights": "w",
               "param.sr.mix_prob": p, "param.sr.gan.content.type": "mse"}  # fmt: skip
        store.write_trial(f"p{p}", [row], "finished")
    return store.uri


def test_results_by_typo_suggests_the_parameter_column(tmp_path: Path) -> None:
    uri = _results(tmp_path)
    for cmd in (["summary", uri, "--by", "sr.mixprob"], ["plot", uri, "--by", "mix_prob", "-o", "x.png"]):
        res = runner.invoke(app, ["results", *cmd])
        assert res.exit_code == 1, res.output
        assert f"unknown parameter {cmd[3]!r}" in res.output and "did you mean sr.mix_prob?" in res.output
    res = runner.invoke(app, ["results", "summary", uri, "--by", "nothing_like_it"])
    assert res.exit_code == 1 and "did you mean" not in res.output


# --------------------------------------------------------------------------------- weights messages
def _schema_has(dotted: str) -> bool:
    from csrgan.config import _fields_at

    *section, key = dotted.split(".")
    return key in _fields_at(tuple(section))


def _config_keys(text: str) -> set[str]:
    return set(re.findall(r"\b(?:eval|weights|sr|data)\.[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*", text))


@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache, so every torchvision checkpoint is missing."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    yield tmp_path
    torch.hub.set_dir(old)


def _hr_folder(tmp_path: Path) -> Path:
    from csrgan.data.io import write_image

    rng = np.random.default_rng(0)
    write_image(tmp_path / "hr" / "a.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    return tmp_path / "hr"


def test_evaluate_missing_lpips_weights_names_only_evaluate_options(no_weights: Path) -> None:
    known = _options(runner.invoke(app, ["evaluate", "--help"]).output)
    res = runner.invoke(app, ["evaluate", "--hr", str(_hr_folder(no_weights)), "--metrics", "psnr,lpips"])
    assert res.exit_code == 1, res.output
    named = _options(res.output)
    assert {"--lpips-weights", "--lpips-optional"} <= named <= known, named - known
    assert not _config_keys(res.output), "csrgan evaluate takes flags, not experiment-file keys"


def test_experiment_file_messages_name_schema_keys_only(no_weights: Path) -> None:
    from csrgan import weights as W

    for name in ("alexnet", "vgg16", "vgg19"):
        with pytest.raises(W.MissingWeightsError) as err:
            W.resolve(name)
        keys = _config_keys(str(err.value))
        assert keys and all(_schema_has(k) for k in keys), keys
        assert not _options(str(err.value)), str(err.value)
    msg = W.lpips_disabled_message(err.value, "sweep")
    assert "eval.lpips.optional" in msg and all(_schema_has(k) for k in _config_keys(msg))


def test_lpips_disabled_in_evaluate_names_the_flag(no_weights: Path) -> None:
    from csrgan import weights as W
    from csrgan.names import settings_named_for

    known = _options(runner.invoke(app, ["evaluate", "--help"]).output)
    with settings_named_for("evaluate"), pytest.raises(W.MissingWeightsError) as err:
        W.resolve("alexnet")
    with settings_named_for("evaluate"):
        msg = W.lpips_disabled_message(err.value)
    assert "--lpips-optional" in msg and _options(msg) <= known
    assert not _config_keys(msg)
    assert _options(W.where_to_give("lpips_random")) == set()  # outside evaluate: the schema's key
    with settings_named_for("evaluate"):
        assert W.where_to_give("lpips_random") == "--random-lpips" and "--random-lpips" in known


def test_sweep_says_lpips_disabled_once_per_process(tmp_path: Path) -> None:
    from csrgan.config import load_config
    from csrgan.sweep.driver import _lpips_preflight

    missing = tmp_path / "no-alexnet.pth"
    cfg = load_config(REPO / "experiments" / "quickstart.yaml", [f"eval.lpips.source={missing}"])
    said: list[str] = []
    for _ in range(3):
        out = _lpips_preflight(cfg, said.append)
        assert "lpips" not in out.eval.metrics
    assert len(said) == 1 and said[0].count("LPIPS DISABLED") == 1 and str(missing) in said[0]
    assert "eval.lpips.optional" in said[0] and not _options(said[0])


def test_warn_once_prints_a_message_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from csrgan.weights import warn_once

    message = f"weights missing at {tmp_path}"
    assert warn_once(message) is True
    assert warn_once(message) is False
    assert capsys.readouterr().err.count(message) == 1
