"""Spec of the experiment file (csrgan.config) and of ``csrgan sweep`` refusing a bad one.

Issue requirement: "a wrong config names the field and exits non-zero before anything starts" -- unknown
keys, wrong types and out-of-range values give exit code 2 with the file, the field path and what was
expected, before Ray starts or anything is written. The corpus below starts from one valid, tiny base
config and breaks it in one way per case.

Also specified here: ``--set`` overrides are YAML scalars typed by the schema (never ``eval``), YAML is
read with ``safe_load``, and the hashes that key stage reuse (csrgan.train.keys) depend on exactly what
they should. Networks, losses and metrics are named through registries (csrgan.registry): the known
names in messages come from there, and a network's arguments are checked against its constructor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from typer.testing import CliRunner

from csrgan.cli.app import app
from csrgan.config import (
    ConfigError,
    ExperimentConfig,
    config_hash,
    load_config,
    parse_override,
    with_params,
)
from csrgan.registry import GAN_LOSSES, LOSSES, METRICS
from csrgan.train.keys import cyclegan_key, gan_key, pretrain_key

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SHIPPED = ("quickstart.yaml", "mix_prob.yaml", "loss_weights.yaml", "esrgan_mix_prob.yaml")

runner = CliRunner()


# ------------------------------------------------------------------------------------------ the base
def base_config(tmp: Path) -> dict[str, Any]:
    """A valid experiment: demo data and storage in ``tmp`` (neither exists yet), tiny models."""
    return {
        "name": "cfgtest",
        "seed": 0,
        "storage": str(tmp / "storage"),
        "data": {"demo": {"dir": str(tmp / "demo"), "seed": 0}, "scale": 4},
        "cyclegan": {
            "learner": "cyclegan",  # junyanz's CycleGAN (the default learner is frequency_separation)
            "generator": {"type": "resnet", "ngf": 4, "n_blocks": 1},
            "discriminator": {"type": "patchgan", "ndf": 4, "n_layers": 1},
            "iters": 2,
            "batch_size": 1,
            "patch_size": 8,
            "eval_every": 1,
            "checkpoint_every": 1,
        },
        "sr": {
            "generator": {"channels": 4, "n_blocks": 1},
            "discriminator": {"channels": 4},
            "mix_prob": 1.0,
            "pretrain": {"iters": 1},
            "gan": {"iters": 2, "content": {"type": "mse"}, "adv_weight": 1.0e-3},
            "batch_size": 1,
            "patch_size": 16,
            "eval_every": 1,
            "checkpoint_every": 1,
        },
        "eval": {"metrics": ["psnr", "ssim"]},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "search": {
            "method": "grid",
            "metric": {"name": "unknown/psnr", "goal": "maximize"},
            "parameters": {"sr.mix_prob": {"values": [0.0, 1.0]}},
            "seeds": [0],
        },
    }


def write_yaml(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def _set(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets ``dotted`` (creating sections) in the raw dict."""

    def mutate(d: dict[str, Any]) -> None:
        *parents, leaf = dotted.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value

    return mutate


def _drop(dotted: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, leaf = dotted.split(".")
        for p in parents:
            d = d[p]
        del d[leaf]

    return mutate


def _param(name: str, spec: dict[str, Any], method: str | None = None) -> Callable[[dict[str, Any]], None]:
    """Replace the searched parameters by ``{name: spec}`` (optionally switching the method)."""

    def mutate(d: dict[str, Any]) -> None:
        d["search"]["parameters"] = {name: spec}
        if method:
            d["search"]["method"] = method

    return mutate


def _arms(*arms: Any, method: str | None = None) -> Callable[[dict[str, Any]], None]:
    """Give the search these ``arms`` (optionally switching the method)."""

    def mutate(d: dict[str, Any]) -> None:
        d["search"]["arms"] = list(arms)
        if method:
            d["search"]["method"] = method

    return mutate


def _both(*muts: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        for m in muts:
            m(d)

    return mutate


# ---------------------------------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class Case:
    """One malformed config: a mutation of the base (or the raw file text), optional ``--set`` items,
    and substrings the message must contain (the field path first, then what was expected)."""

    id: str
    expect: tuple[str, ...]
    mutate: Callable[[dict[str, Any]], None] | None = None
    text: str | None = None
    sets: tuple[str, ...] = ()
    names_file: bool = True  # --set syntax errors name the --set item instead of the file


CASES = [
    # unknown keys
    Case("unknown-top-level-key", ("- colour:", "Extra inputs are not permitted"), _set("colour", "red")),
    Case("unknown-nested-key", ("- sr.gan.foo:", "Extra inputs are not permitted"), _set("sr.gan.foo", 1)),
    Case("typo-mix_porb", ("- sr.mix_porb:", "Extra inputs are not permitted"), _set("sr.mix_porb", 0.5)),
    # p = sr.mix_prob outside [0, 1] or not a number
    Case("mix_prob-1.5", ("- sr.mix_prob:", "less than or equal to 1", "1.5"), _set("sr.mix_prob", 1.5)),
    Case("mix_prob-negative", ("- sr.mix_prob:", "greater than or equal to 0"), _set("sr.mix_prob", -0.1)),
    Case("mix_prob-string", ("- sr.mix_prob:", "valid number", "'high'"), _set("sr.mix_prob", "high")),
    # numbers out of range / wrong types
    Case("negative-gan-iters", ("- sr.gan.iters:", "greater than or equal to 0"), _set("sr.gan.iters", -5)),
    Case("zero-cyclegan-iters", ("- cyclegan.iters:", "greater than 0"), _set("cyclegan.iters", 0)),
    Case("zero-batch-size", ("- sr.batch_size:", "greater than 0"), _set("sr.batch_size", 0)),
    Case(
        "lambda-cycle-string",
        ("- cyclegan.lambda_cycle:", "valid number"),
        _set("cyclegan.lambda_cycle", "ten"),
    ),
    Case("section-is-a-number", ("- sr:", "valid dictionary"), _set("sr", 5)),
    Case(
        "unknown-metric",
        ("- eval.metrics.2:", f"unknown metric 'fid'; known: {', '.join(METRICS.names())}"),
        _set("eval.metrics", ["psnr", "ssim", "fid"]),
    ),
    Case(
        "unknown-search-metric",
        ("- search.metric.name:", "unknown metric 'fid'", ", ".join(METRICS.names())),
        _set("search.metric.name", "unknown/fid"),
    ),
    # registered components: names and constructor arguments
    Case(
        "unknown-sr-generator",
        ("- sr.generator:", "unknown SR generator 'edsr'; known:", "srresnet"),
        _set("sr.generator", {"type": "edsr"}),
    ),
    Case(
        "unknown-sr-generator-argument",
        ("- sr.generator:", "'srresnet' has no argument(s) ['width']", "channels"),
        _set("sr.generator.width", 8),
    ),
    Case(
        "injected-sr-generator-argument",
        ("- sr.generator:", "['scale'] are set by csrgan"),
        _set("sr.generator.scale", 2),
    ),
    Case(
        "sr-generator-argument-wrong-type",
        ("- sr.generator:", "channels:", "valid integer", "'wide'"),
        _set("sr.generator.channels", "wide"),
    ),
    Case(
        "injected-sr-discriminator-argument",
        ("- sr.discriminator:", "['patch_size'] are set by csrgan"),
        _set("sr.discriminator.patch_size", 32),
    ),
    Case(
        "unknown-cyclegan-generator",
        ("- cyclegan.generator:", "unknown degradation generator 'unet'; known:", "resnet"),
        _set("cyclegan.generator.type", "unet"),
    ),
    Case(
        "cyclegan-generator-bad-norm",
        ("- cyclegan.generator:", "norm:", "'layer'"),
        _set("cyclegan.generator.norm", "layer"),
    ),
    Case(
        "unknown-cyclegan-discriminator-argument",
        ("- cyclegan.discriminator:", "'patchgan' has no argument(s) ['n_layers_d']", "n_layers"),
        _set("cyclegan.discriminator.n_layers_d", 2),
    ),
    Case(
        "old-sr-model-section",
        ("- sr:", "`sr.model` is gone", "sr.generator", "discriminator.channels"),
        _set("sr.model", {"channels": 4, "n_blocks": 1, "d_channels": 4}),
    ),
    Case(
        "old-cyclegan-model-section",
        ("- cyclegan:", "`cyclegan.model` is gone", "cyclegan.generator", "discriminator.n_layers"),
        _set("cyclegan.model", {"ngf": 4, "n_blocks": 1, "ndf": 4, "n_layers_d": 1}),
    ),
    Case(
        "unknown-degradation-learner",
        ("- cyclegan.learner:", "'frequency_separation' or 'cyclegan'", "'dsgan'"),
        _set("cyclegan.learner", "dsgan"),
    ),
    Case(
        "residual-generator-with-resnet-arguments",  # the default generator is now `residual`
        ("- cyclegan.generator:", "'residual' has no argument(s) ['ngf']", "nf, n_blocks, noise_channels"),
        _set("cyclegan.generator", {"ngf": 4, "n_blocks": 1}),
    ),
    Case(
        "even-low-pass",
        ("- cyclegan.frequency_separation.low_pass:", "must be odd", "4"),
        _set("cyclegan.frequency_separation.low_pass", 4),
    ),
    Case(
        "zero-cache-variants",
        ("- cyclegan.cache_variants:", "greater than 0"),
        _set("cyclegan.cache_variants", 0),
    ),
    Case(
        "unknown-lr-source",
        ("- sr.lr_source:", "'cyclegan', 'pipeline' or 'paired'", "'real'"),
        _set("sr.lr_source", "real"),
    ),
    Case(
        "paired-lr-source-without-train-lr",
        ("sr.lr_source is 'paired'", "data.train_lr is not set"),
        _set("sr.lr_source", "paired"),
    ),
    Case(
        "pipeline-without-pipeline-source",
        ("sr.pipeline is set but sr.lr_source is 'cyclegan'",),
        _set("sr.pipeline", str(REPO / "csrgan" / "data" / "default_degradation.yaml")),
    ),
    Case(
        "lr-milestones-not-increasing",
        ("- sr.gan:", "milestones must be strictly increasing", "[1, 1]"),
        _both(_set("sr.gan.iters", 5), _set("sr.gan.schedule", {"type": "multistep", "milestones": [1, 1]})),
    ),
    Case(
        "lr-milestone-after-the-end",
        ("- sr.gan:", "milestones [2] must be < iters (2)"),
        _set("sr.gan.schedule", {"type": "multistep", "milestones": [2]}),
    ),
    Case(
        "lr-milestones-moved-to-the-schedule",
        ("`sr.gan.lr_milestones` is gone", "sr.gan.schedule: {type: multistep"),
        _set("sr.gan.lr_milestones", [1]),
    ),
    Case(
        "unknown-schedule",
        ("- sr.pretrain.schedule:", "unknown learning-rate schedule 'linear'", "cosine, multistep"),
        _set("sr.pretrain.schedule", {"type": "linear"}),
    ),
    Case(
        "mse-content-with-a-layer",  # mse takes no arguments (a VGG layer is meaningless for it)
        ("- sr.gan.content:", "loss 'mse' has no argument(s) ['layer']"),
        _set("sr.gan.content", {"type": "mse", "layer": "relu5_4"}),
    ),
    Case(
        "unknown-content-loss",
        ("- sr.gan.content:", "unknown loss 'perceptual'; known:", ", ".join(LOSSES.names())),
        _set("sr.gan.content.type", "perceptual"),
    ),
    Case(
        "unknown-pretrain-loss",
        ("- sr.pretrain.loss:", "unknown loss 'huber'; known:", ", ".join(LOSSES.names())),
        _set("sr.pretrain.loss", "huber"),
    ),
    Case(
        "unknown-gan-mode",
        ("- sr.gan.gan_mode:", "unknown GAN loss 'wgan'; known:", ", ".join(GAN_LOSSES.names())),
        _set("sr.gan.gan_mode", "wgan"),
    ),
    # storage: folders and s3:// / gs:// object stores; any other scheme is refused
    Case(
        "unsupported-storage-scheme",
        ("- storage:", "unsupported scheme", "hdfs://namenode/results", "s3://"),
        _set("storage", "hdfs://namenode/results"),
    ),
    Case(
        "decay-after-end",
        ("- cyclegan:", "decay_start (5) must be <= iters (2)"),
        _set("cyclegan.decay_start", 5),
    ),
    Case(
        "patch-not-multiple-of-scale",
        ("sr.patch_size (18)", "multiple of data.scale (4)"),
        _set("sr.patch_size", 18),
    ),
    Case("scale-3", ("- data.scale:", "2, 4 or 8"), _set("data.scale", 3)),
    # data section
    Case(
        "bad-test-set-name",
        ("- data.test_sets.0.name:", "pattern"),
        _set("data.test_sets", [{"name": "my set!", "hr": "x"}]),
    ),
    Case(
        "duplicate-test-set-names",
        ("- data:", "test set names must be unique", "['a']"),
        _set("data.test_sets", [{"name": "a", "hr": "x"}, {"name": "a", "hr": "y"}]),
    ),
    Case(
        "test-set-without-images",
        ("- data.test_sets.0:", "needs `hr`"),
        _set("data.test_sets", [{"name": "a"}]),
    ),
    Case("missing-name", ("- name: Field required",), _drop("name")),
    Case("bad-experiment-name", ("- name:", "pattern"), _set("name", "../escape")),
    Case("missing-data", ("- data: Field required",), _drop("data")),
    Case("data-without-train_hr-or-demo", ("- data:", "data.train_hr", "data.demo"), _drop("data.demo")),
    # search section
    Case(
        "method-bayes", ("- search.method:", "'grid', 'random' or 'optuna'"), _set("search.method", "bayes")
    ),
    Case(
        "metric-without-slash",
        ("- search.metric.name:", "pattern"),
        _set("search.metric.name", "unknown_psnr"),
    ),
    Case(
        "metric-on-unknown-test-set",
        ("search.metric.name 'Set5/psnr'", "no test set 'Set5'", "bicubic", "unknown"),
        _set("search.metric.name", "Set5/psnr"),
    ),
    Case(
        "param-two-forms",
        ("- search.parameters.sr.mix_prob:", "exactly one of", "['values', 'uniform']"),
        _param("sr.mix_prob", {"values": [0.0], "uniform": [0.0, 1.0]}),
    ),
    Case(
        "param-no-form",
        ("- search.parameters.sr.mix_prob:", "exactly one of"),
        _param("sr.mix_prob", {}),
    ),
    Case(
        "uniform-low-not-below-high",
        ("- search.parameters.sr.mix_prob:", "low < high", "[0.5, 0.5]"),
        _param("sr.mix_prob", {"uniform": [0.5, 0.5]}, method="random"),
    ),
    Case(
        "log-uniform-non-positive",
        ("- search.parameters.sr.gan.adv_weight.log_uniform.0:", "greater than 0"),
        _param("sr.gan.adv_weight", {"log_uniform": [0.0, 1.0]}, method="random"),
    ),
    Case(
        "empty-values",
        ("- search.parameters.sr.mix_prob:", "values must not be empty"),
        _param("sr.mix_prob", {"values": []}),
    ),
    Case(
        "grid-with-uniform",
        ("- search:", "method grid needs `values`", "sr.gan.adv_weight"),
        _param("sr.gan.adv_weight", {"uniform": [0.001, 0.01]}),
    ),
    Case(
        "grid-with-num-samples",
        ("- search:", "num_samples applies to random/optuna"),
        _set("search.num_samples", 4),
    ),
    Case(
        "searched-path-missing",
        ("search.parameters", "'sr.gan.nope' is not a config field"),
        _param("sr.gan.nope", {"values": [1]}),
    ),
    Case(
        "searched-spec-argument-missing",
        ("search.parameters", "'sr.generator.depth' is not a config field (no 'depth')"),
        _param("sr.generator.depth", {"values": [1, 2]}),
    ),
    Case(
        "searched-path-is-section",
        ("search.parameters", "'sr.gan' is a section, not a value"),
        _param("sr.gan", {"values": [1]}),
    ),
    Case(
        "optuna-two-seeds",
        ("- search:", "optuna takes one seed"),
        _both(_param("sr.mix_prob", {"uniform": [0.0, 1.0]}, method="optuna"), _set("search.seeds", [0, 1])),
    ),
    Case(
        "arm-unknown-key",
        ("search.arms[1]: 'sr.mix_probb' is not a config field (no 'mix_probb')",),
        _arms({"sr.mix_prob": 0.0}, {"sr.mix_probb": 0.5}),
    ),
    Case(
        "arm-key-is-section",
        ("search.arms[0]: 'sr.gan' is a section, not a value",),
        _arms({"sr.gan": 1}),
    ),
    Case(
        "arm-value-out-of-range",
        ("- search.arms[1]: sr.mix_prob:", "less than or equal to 1", "(got 1.5)"),
        _arms({"sr.mix_prob": 0.0}, {"sr.gan.adv_weight": 1e-2, "sr.mix_prob": 1.5}),
    ),
    Case(
        "arm-invalid-combination",  # each value is valid alone; together they break a cross-check
        ("- search.arms[0]:", "sr.patch_size (20) must be a multiple of data.scale (8)"),
        _arms({"data.scale": 8, "sr.patch_size": 20}),
    ),
    Case("arm-empty", ("- search.arms:", "search.arms[1] is empty"), _arms({"sr.mix_prob": 0.0}, {})),
    Case("arm-not-a-mapping", ("- search.arms.0:", "valid dictionary"), _arms(0.5)),
    Case("arms-not-a-list", ("- search.arms:", "valid list"), _set("search.arms", {"sr.mix_prob": 0.0})),
    Case(
        "arms-with-optuna",
        ("- search:", "method optuna does not take search.arms"),
        _both(
            _param("sr.gan.lr", {"log_uniform": [1e-5, 1e-3]}, method="optuna"), _arms({"sr.mix_prob": 0.0})
        ),
    ),
    Case("duplicate-seeds", ("- search:", "seeds must be distinct"), _set("search.seeds", [0, 1, 0])),
    Case("negative-seed", ("- search.seeds.0:", "greater than or equal to 0"), _set("search.seeds", [-1])),
    Case(
        "asha-reduction-factor-1",
        ("search.scheduler", "reduction_factor", "greater than 1"),
        _set("search.scheduler", {"type": "asha", "reduction_factor": 1}),
    ),
    Case(
        "unknown-scheduler",
        ("- search.scheduler:", "'pbt'", "expected tags: 'fifo', 'asha'"),
        _set("search.scheduler", {"type": "pbt"}),
    ),
    # resources
    Case(
        "fractional-gpus",
        ("- resources.gpus_per_worker:", "whole number", "0.5"),
        _set("resources.gpus_per_worker", 0.5),
    ),
    # the file itself
    Case("top-level-list", ("top level must be a mapping",), text="- name: x\n- data: {}\n"),
    Case("top-level-scalar", ("top level must be a mapping",), text="just a string\n"),
    Case("empty-file", ("empty",), text=""),
    Case("comments-only", ("empty",), text="# nothing here\n"),
    Case("invalid-yaml", ("not valid YAML", "line"), text="name: x\ndata: {demo: [\n"),
    Case(
        "python-object-tag",
        ("not valid YAML", "python/object"),
        text="name: !!python/object/apply:os.system ['echo pwned']\ndata: {demo: {}}\n",
    ),
    # --set overrides
    Case(
        "set-out-of-range", ("- sr.mix_prob:", "less than or equal to 1", "(got 2)"), sets=("sr.mix_prob=2",)
    ),
    Case("set-unknown-key", ("- sr.mix_porb:", "Extra inputs"), sets=("sr.mix_porb=0.5",)),
    Case(
        "set-without-equals",
        ("--set 'sr.mix_prob'", "expected key=value"),
        sets=("sr.mix_prob",),
        names_file=False,
    ),
    Case(
        "set-into-a-value",
        ("--set 'sr.mix_prob.x=1'", "'mix_prob' is a value, not a section"),
        sets=("sr.mix_prob.x=1",),
        names_file=False,
    ),
    Case("set-empty-key-part", ("--set 'sr..x=1'", "bad key"), sets=("sr..x=1",), names_file=False),
    Case(
        "set-bad-yaml-value",
        ("--set 'sr.mix_prob=[0.5'", "not valid YAML"),
        sets=("sr.mix_prob=[0.5",),
        names_file=False,
    ),
]

assert len(CASES) >= 25
assert len({c.id for c in CASES}) == len(CASES)


def write_case(case: Case, tmp: Path) -> Path:
    path = tmp / "cfg" / f"bad-{case.id}.yaml"
    if case.text is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(case.text)
        return path
    raw = base_config(tmp)
    if case.mutate is not None:
        case.mutate(raw)
    return write_yaml(path, raw)


def test_base_config_is_valid(tmp_path: Path) -> None:
    """Every case below breaks exactly one thing in this config."""
    cfg = load_config(write_yaml(tmp_path / "ok.yaml", base_config(tmp_path)))
    assert cfg.sr.mix_prob == 1.0
    assert cfg.search is not None and list(cfg.search.parameters) == ["sr.mix_prob"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_library_error_names_file_and_field(case: Case, tmp_path: Path) -> None:
    path = write_case(case, tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path, list(case.sets))
    msg = str(info.value)
    if case.names_file:
        assert str(path) in msg, msg
    for part in case.expect:
        assert part in msg, f"{part!r} not in:\n{msg}"


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail loudly if ``csrgan sweep`` goes past validation (data resolution or the sweep itself)."""
    from csrgan.data import layout

    called: list[str] = []
    real_resolve = layout.resolve_data

    def resolve_data(cfg: Any, base: Any = None, build_demo: bool = True) -> Any:
        if build_demo:  # making paths absolute is checking; building the demo set is starting
            called.append("resolve_data")
            raise AssertionError("csrgan sweep went past validation: resolve_data built the demo set")
        return real_resolve(cfg, base, build_demo=False)

    def build_demo(*a: Any, **k: Any) -> None:
        called.append("build_demo")
        raise AssertionError("csrgan sweep went past validation: the demo set was built")

    def run_sweep(*a: Any, **k: Any) -> None:
        called.append("run_sweep")
        raise AssertionError("csrgan sweep went past validation: run_sweep was called")

    monkeypatch.setattr("csrgan.data.layout.resolve_data", resolve_data)
    monkeypatch.setattr("csrgan.data.demo.build_demo", build_demo)
    monkeypatch.setattr("csrgan.sweep.driver.run_sweep", run_sweep)
    return called


def assert_nothing_written(tmp: Path, work: Path) -> None:
    assert not (tmp / "storage").exists(), "the storage folder was created"
    assert not (tmp / "demo").exists(), "the demo data folder was created"
    assert list(work.iterdir()) == [], f"files appeared in the working directory: {list(work.iterdir())}"
    assert not ray.is_initialized()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cli_exits_2_before_anything_starts(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_starts: list[str]
) -> None:
    path = write_case(case, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = ["sweep", str(path), *[x for s in case.sets for x in ("--set", s)]]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert res.stderr.startswith("error: "), res.stderr
    if case.names_file:
        assert str(path) in res.stderr
    for part in case.expect:
        assert part in res.stderr, f"{part!r} not in:\n{res.stderr}"
    assert "Traceback" not in res.output
    assert nothing_starts == []
    assert_nothing_written(tmp_path, work)


def test_cli_missing_file_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_starts: list[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["sweep", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert "nope.yaml" in res.stderr and "not found" in res.stderr
    assert_nothing_written(tmp_path, work)


# ---------------------------------------------------------- searched values outside the field's range
# A searched value is only validated when a trial's config is built (trial_config -> with_params), i.e.
# after `csrgan sweep` has built the demo data and created the results folder, and the ConfigError then
# escapes run_sweep as a traceback (exit 1). The schema knows every target field's constraints at load.
SEARCHED_OUT_OF_RANGE = [
    pytest.param(_param("sr.mix_prob", {"values": [0.0, 1.5]}), id="grid-values-p-1.5"),
    pytest.param(_param("sr.mix_prob", {"values": [0.0, "high"]}), id="grid-values-p-string"),
    pytest.param(_param("sr.mix_prob", {"uniform": [0.5, 1.5]}, method="random"), id="random-uniform-p"),
    pytest.param(
        _param("sr.gan.iters", {"int_uniform": [-5, 10]}, method="random"), id="random-int-negative"
    ),
    pytest.param(_param("sr.generator.n_blocks", {"values": [1, "two"]}), id="grid-values-spec-argument"),
]


@pytest.mark.parametrize("mutate", SEARCHED_OUT_OF_RANGE)
def test_searched_value_outside_field_range_is_a_config_error(mutate: Any, tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    mutate(raw)
    path = write_yaml(tmp_path / "cfg.yaml", raw)
    with pytest.raises(ConfigError, match=r"search\.parameters"):
        load_config(path)


def test_cli_searched_value_outside_range_exits_2_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_starts: list[str]
) -> None:
    raw = base_config(tmp_path)
    _param("sr.mix_prob", {"values": [0.0, 1.5]})(raw)
    path = write_yaml(tmp_path / "cfg" / "p15.yaml", raw)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["sweep", str(path)])
    assert res.exit_code == 2, (res.exit_code, res.output, nothing_starts)
    assert "sr.mix_prob" in res.stderr
    assert_nothing_written(tmp_path, work)


# ------------------------------------------------------------------------------------- valid configs
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_experiments_validate(name: str) -> None:
    cfg = load_config(EXPERIMENTS / name)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.search is not None
    assert cfg.sr.patch_size % cfg.data.scale == 0


def test_every_shipped_experiment_is_covered() -> None:
    assert sorted(p.name for p in EXPERIMENTS.glob("*.yaml")) == sorted(SHIPPED)


@pytest.fixture
def ok_path(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "ok.yaml", base_config(tmp_path))


def test_set_exponent_without_dot_is_a_float(ok_path: Path) -> None:
    """YAML 1.1 reads ``5e-3`` as a string; an override means the number."""
    cfg = load_config(ok_path, ["sr.gan.adv_weight=5e-3"])
    assert cfg.sr.gan.adv_weight == 0.005
    assert type(cfg.sr.gan.adv_weight) is float


@pytest.mark.parametrize(
    ("item", "dotted", "expected", "typ"),
    [
        ("sr.mix_prob=0.5", "sr.mix_prob", 0.5, float),
        ("sr.mix_prob=0", "sr.mix_prob", 0.0, float),
        ("sr.pretrain.iters=7", "sr.pretrain.iters", 7, int),
        ("sr.generator.global_bicubic_skip=true", "sr.generator.global_bicubic_skip", True, bool),
        ("sr.generator.channels=8", "sr.generator.channels", 8, int),
        ("cyclegan.generator.ngf=8", "cyclegan.generator.ngf", 8, int),
        ("sr.gan.content.type=l1", "sr.gan.content.type", "l1", str),
        ("eval.metrics=[psnr]", "eval.metrics", ["psnr"], list),
        ("name=other-run", "name", "other-run", str),
        ("resources.max_concurrent_trials=null", "resources.max_concurrent_trials", None, type(None)),
    ],
)
def test_set_values_are_typed_by_the_schema(
    ok_path: Path, item: str, dotted: str, expected: Any, typ: type
) -> None:
    cfg = load_config(ok_path, [item])
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    assert node == expected
    assert type(node) is typ


def test_set_creates_missing_sections(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    del raw["sr"]["gan"]
    cfg = load_config(write_yaml(tmp_path / "c.yaml", raw), ["sr.gan.lr=3e-5"])
    assert cfg.sr.gan.lr == 3e-5


def test_later_set_wins(ok_path: Path) -> None:
    assert load_config(ok_path, ["sr.mix_prob=0.25", "sr.mix_prob=0.75"]).sr.mix_prob == 0.75


def test_set_does_not_change_the_file(ok_path: Path) -> None:
    before = ok_path.read_text()
    load_config(ok_path, ["sr.mix_prob=0.5"])
    assert ok_path.read_text() == before


def test_overrides_are_never_evaluated(
    ok_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = "__import__('os').system('touch PWNED')"
    assert parse_override(f"storage={code}") == ("storage", code)
    cfg = load_config(ok_path, [f"storage={code}"])
    assert cfg.storage == code  # a plain string, never run
    with pytest.raises(ConfigError, match=r"- name:.*pattern"):
        load_config(ok_path, ["name=__import__('os')"])
    assert not (tmp_path / "PWNED").exists()


def test_yaml_is_loaded_with_safe_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_dump(base_config(tmp_path)).replace(
        "name: cfgtest", "name: !!python/object/apply:os.system ['touch PWNED']"
    )
    path = tmp_path / "tagged.yaml"
    path.write_text(raw)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------------------------- hashes
def _reversed(obj: Any) -> Any:
    """The same mapping with every level's key order reversed."""
    if isinstance(obj, dict):
        return {k: _reversed(obj[k]) for k in reversed(list(obj))}
    return obj


def test_config_hash_is_independent_of_key_order(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    a = load_config(write_yaml(tmp_path / "a.yaml", raw))
    b = load_config(write_yaml(tmp_path / "b.yaml", _reversed(raw)))
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(load_config(tmp_path / "a.yaml", ["sr.gan.adv_weight=2e-3"]))


def test_config_hash_same_for_file_and_override(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    raw["sr"]["gan"]["adv_weight"] = 0.005
    from_file = load_config(write_yaml(tmp_path / "a.yaml", raw))
    from_set = load_config(write_yaml(tmp_path / "b.yaml", base_config(tmp_path)), ["sr.gan.adv_weight=5e-3"])
    assert config_hash(from_file) == config_hash(from_set)


@pytest.fixture
def keyed(tmp_path: Path) -> Callable[..., ExperimentConfig]:
    path = write_yaml(tmp_path / "k.yaml", base_config(tmp_path))
    return lambda *sets: load_config(path, list(sets))


SR_ONLY = [
    "sr.mix_prob=0.5",
    "sr.mix_prob=0",
    "sr.gan.adv_weight=0.01",
    "sr.gan.iters=9",
    "sr.pretrain.iters=9",
    "sr.generator.channels=8",
    "sr.discriminator.channels=8",
    "sr.batch_size=2",
    "sr.patch_size=32",
    "eval.metrics=[psnr]",
    "cyclegan.eval_every=2",  # logging cadence does not change the trained network
    "cyclegan.checkpoint_every=2",
    "seed=1",  # a sweep's seeds repeat SR training over one shared CycleGAN (cyclegan.seed is its own)
    "sr.lr_source=pipeline",
    "sr.gan.schedule.type=cosine",
    "sr.ema.decay=0.99",
    "sr.gan.gan_mode=ragan",
]
CYCLEGAN = [
    "cyclegan.iters=3",
    "cyclegan.lambda_cycle=5",
    "cyclegan.lambda_identity=0",
    "cyclegan.generator.ngf=8",
    "cyclegan.discriminator.n_layers=2",
    "cyclegan.lr=1e-4",
    "cyclegan.patch_size=16",
    "cyclegan.seed=1",
    "cyclegan.learner=frequency_separation",
    "cyclegan.frequency_separation.texture_weight=0.1",
    "cyclegan.frequency_separation.low_pass=3",
    "cyclegan.cache_variants=2",
    "data.scale=2",
    "data.real_lr=/elsewhere",
]


@pytest.mark.parametrize("item", SR_ONLY)
def test_cyclegan_key_ignores_sr_changes(keyed: Callable[..., ExperimentConfig], item: str) -> None:
    assert cyclegan_key(keyed(item)) == cyclegan_key(keyed())


@pytest.mark.parametrize("item", CYCLEGAN)
def test_cyclegan_key_follows_cyclegan_changes(keyed: Callable[..., ExperimentConfig], item: str) -> None:
    assert cyclegan_key(keyed(item)) != cyclegan_key(keyed())


@pytest.mark.parametrize(
    "item",
    [
        "sr.gan.adv_weight=0.01",
        "sr.gan.lr=3e-5",
        "sr.gan.iters=9",
        "sr.gan.content.weight=2",
        "sr.gan.gan_mode=lsgan",
        "sr.discriminator.channels=8",
    ],
)
def test_pretrain_key_ignores_gan_phase_changes(keyed: Callable[..., ExperimentConfig], item: str) -> None:
    assert pretrain_key(keyed(item)) == pretrain_key(keyed())


@pytest.mark.parametrize(
    "item",
    [
        "sr.pretrain.iters=9",
        "sr.pretrain.lr=3e-5",
        "sr.mix_prob=0.5",
        "sr.generator.channels=8",
        "cyclegan.iters=3",
        "seed=1",
    ],
)
def test_pretrain_key_follows_its_inputs(keyed: Callable[..., ExperimentConfig], item: str) -> None:
    assert pretrain_key(keyed(item)) != pretrain_key(keyed())


def test_pretrain_key_ignores_cyclegan_when_p_is_0(keyed: Callable[..., ExperimentConfig]) -> None:
    """With p = 0 the CycleGAN is not an input of pre-training."""
    assert pretrain_key(keyed("sr.mix_prob=0", "cyclegan.iters=3")) == pretrain_key(keyed("sr.mix_prob=0"))


@pytest.mark.parametrize(
    "item",
    [
        "sr.gan.adv_weight=0.01",
        "sr.gan.content.weight=2",
        "sr.gan.gan_mode=lsgan",
        "sr.discriminator.channels=8",
        "sr.pretrain.iters=9",  # the GAN phase starts from the pre-trained generator
        "sr.generator.channels=8",
        "sr.mix_prob=0.5",
        "cyclegan.iters=3",
        "seed=1",
    ],
)
def test_gan_key_follows_its_inputs(keyed: Callable[..., ExperimentConfig], item: str) -> None:
    assert gan_key(keyed(item)) != gan_key(keyed())


def test_gan_key_ignores_cyclegan_when_p_is_0(keyed: Callable[..., ExperimentConfig]) -> None:
    assert gan_key(keyed("sr.mix_prob=0", "cyclegan.iters=3")) == gan_key(keyed("sr.mix_prob=0"))


@pytest.mark.parametrize(
    "item",
    ["cyclegan.gate.min_lowfreq_psnr=20", "cyclegan.gate.max_hf_w1_ratio=1.5", "cyclegan.accept_poor=true"],
)
@pytest.mark.parametrize("stage", ["cyclegan", "pretrain", "gan"])
def test_the_quality_gate_is_in_no_key(keyed: Callable[..., ExperimentConfig], stage: str, item: str) -> None:
    """The gate judges a finished degradation stage (re-applied on every reuse); it does not change it."""
    key = {"cyclegan": cyclegan_key, "pretrain": pretrain_key, "gan": gan_key}[stage]
    assert key(keyed(item)) == key(keyed())


@pytest.mark.parametrize("key", [pretrain_key, gan_key])
def test_sr_keys_follow_the_lr_source(
    keyed: Callable[..., ExperimentConfig], key: Callable[..., str]
) -> None:
    base = key(keyed())
    pipe = key(keyed("sr.lr_source=pipeline"))
    paired = key(keyed("sr.lr_source=paired", "data.train_lr=/lr"))
    assert len({base, pipe, paired}) == 3
    assert key(keyed("sr.lr_source=paired", "data.train_lr=/other")) != paired


@pytest.mark.parametrize("key", [pretrain_key, gan_key])
@pytest.mark.parametrize("source", ["sr.lr_source=pipeline", "sr.mix_prob=0"])
def test_sr_keys_ignore_the_degradation_stage_it_does_not_use(
    keyed: Callable[..., ExperimentConfig], key: Callable[..., str], source: str
) -> None:
    assert key(keyed(source, "cyclegan.iters=3")) == key(keyed(source))


def test_gan_key_follows_the_lr_schedule(keyed: Callable[..., ExperimentConfig]) -> None:
    step = ("sr.gan.schedule.type=multistep", "sr.gan.schedule.milestones=[1]")
    assert gan_key(keyed(*step)) != gan_key(keyed())
    assert gan_key(keyed(*step, "sr.gan.schedule.gamma=0.1")) != gan_key(keyed(*step))
    assert gan_key(keyed("sr.gan.schedule.type=cosine")) != gan_key(keyed())


KEYS = {"cyclegan": cyclegan_key, "pretrain": pretrain_key, "gan": gan_key}


@pytest.mark.parametrize("stage", sorted(KEYS))
@pytest.mark.parametrize(
    "item",
    [
        "sr.eval_every=2",
        "sr.checkpoint_every=2",
        "cyclegan.eval_every=2",
        "cyclegan.checkpoint_every=2",
        "eval.metrics=[psnr]",
        "eval.tile=64",
        "resources.cpus_per_worker=2",
    ],
)
def test_evaluation_and_cadence_settings_do_not_change_keys(
    keyed: Callable[..., ExperimentConfig], stage: str, item: str
) -> None:
    """``eval_every`` / ``checkpoint_every``, evaluation and resources other than workers change how a
    stage is watched, not what it computes."""
    key = KEYS[stage]
    assert key(keyed(item)) == key(keyed())


@pytest.mark.parametrize("stage", sorted(KEYS))
def test_every_key_follows_the_worker_count(keyed: Callable[..., ExperimentConfig], stage: str) -> None:
    """The data shards depend on the number of workers."""
    key = KEYS[stage]
    assert key(keyed("resources.workers=2")) != key(keyed())


def test_keys_of_the_three_stages_differ(keyed: Callable[..., ExperimentConfig]) -> None:
    cfg = keyed()
    assert len({cyclegan_key(cfg), pretrain_key(cfg), gan_key(cfg)}) == 3


# ------------------------------------------------------------------------------ registered components
def test_component_defaults_are_filled_in_and_dumped(tmp_path: Path) -> None:
    """Every constructor argument is in the validated (and dumped, hence hashed) config."""
    cfg = load_config(write_yaml(tmp_path / "ok.yaml", base_config(tmp_path)))
    assert cfg.sr.generator.type == "srresnet"
    assert cfg.sr.generator.kwargs() == {"channels": 4, "n_blocks": 1, "global_bicubic_skip": False}
    assert cfg.sr.discriminator.kwargs() == {"channels": 4, "dense_units": None}
    assert cfg.cyclegan.generator.kwargs() == {
        "ngf": 4,
        "n_blocks": 1,
        "n_down": 2,
        "norm": "instance",
        "use_dropout": False,
    }
    assert cfg.cyclegan.discriminator.kwargs() == {"ndf": 4, "n_layers": 1, "norm": "instance"}
    assert cfg.sr.gan.content.type == "mse" and cfg.sr.gan.content.kwargs() == {}
    dumped = cfg.model_dump(mode="json")
    assert dumped["sr"]["generator"] == {"type": "srresnet", **cfg.sr.generator.kwargs()}
    assert dumped["cyclegan"]["discriminator"]["type"] == "patchgan"
    assert load_config(write_yaml(tmp_path / "again.yaml", dumped)) == cfg


def test_the_default_degradation_learner_is_frequency_separation(tmp_path: Path) -> None:
    """Without ``learner``/``generator``/``discriminator``: DSGAN's loop, the identity-initialised
    residual G and DSGAN's critic; the gate and cache defaults are filled in."""
    raw = base_config(tmp_path)
    for key in ("learner", "generator", "discriminator"):
        del raw["cyclegan"][key]
    cg = load_config(write_yaml(tmp_path / "ok.yaml", raw)).cyclegan
    assert cg.learner == "frequency_separation"
    assert cg.generator.type == "residual"
    assert cg.generator.kwargs() == {"nf": 32, "n_blocks": 4, "noise_channels": 1}
    assert cg.discriminator.type == "dsgan" and cg.discriminator.kwargs() == {"ndf": 64}
    assert cg.frequency_separation.model_dump() == {
        "low_pass": 5,
        "color_weight": 1.0,
        "texture_weight": 0.005,
    }
    assert cg.gate.model_dump() == {"min_lowfreq_psnr": 30.0, "max_gx_psnr": 45.0, "max_hf_w1_ratio": 1.5}
    assert cg.accept_poor is False and cg.cache_variants == 4


def test_explicit_defaults_hash_like_omitted_ones(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    raw["sr"]["generator"].update({"type": "srresnet", "global_bicubic_skip": False})
    explicit = load_config(write_yaml(tmp_path / "a.yaml", raw))
    implicit = load_config(write_yaml(tmp_path / "b.yaml", base_config(tmp_path)))
    assert config_hash(explicit) == config_hash(implicit)
    assert pretrain_key(explicit) == pretrain_key(implicit)


def test_vgg_content_loss_takes_its_constructor_arguments(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    raw["sr"]["gan"]["content"] = {"type": "vgg", "weight": 0.5, "layer": "relu2_2", "feature_scale": 0.1}
    content = load_config(write_yaml(tmp_path / "vgg.yaml", raw)).sr.gan.content
    assert content.weight == 0.5
    assert content.kwargs() == {"layer": "relu2_2", "criterion": "mse", "feature_scale": 0.1}


def test_a_spec_argument_can_be_searched(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    _param("sr.generator.n_blocks", {"values": [1, 2]})(raw)
    cfg = load_config(write_yaml(tmp_path / "search.yaml", raw))
    assert cfg.search is not None
    assert cfg.search.parameters["sr.generator.n_blocks"].values == [1, 2]
    trial = with_params(cfg, {"sr.generator.n_blocks": 2})  # what a trial's config is built with
    assert trial.sr.generator.n_blocks == 2 and trial.sr.generator.channels == 4


# ---------------------------------------------------------------------------------------------- arms
def test_an_arm_is_validated_whole(tmp_path: Path) -> None:
    """``cyclegan.decay_start: 5`` alone breaks ``decay_start <= iters`` (iters 2); with its arm's
    ``cyclegan.iters: 10`` it is valid, and so is the file."""
    raw = base_config(tmp_path)
    _arms({"sr.mix_prob": 0.0}, {"cyclegan.iters": 10, "cyclegan.decay_start": 5})(raw)
    cfg = load_config(write_yaml(tmp_path / "arms.yaml", raw))
    assert cfg.search is not None
    assert cfg.search.arms == [{"sr.mix_prob": 0.0}, {"cyclegan.iters": 10, "cyclegan.decay_start": 5}]
    assert cfg.search.param_names() == ("sr.mix_prob", "cyclegan.iters", "cyclegan.decay_start")


def test_dry_run_lists_the_arms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_starts: list[str]
) -> None:
    raw = base_config(tmp_path)
    raw["search"]["parameters"] = {}
    _arms({"sr.mix_prob": 0.0}, {"sr.mix_prob": 1.0, "sr.gan.adv_weight": 1e-2})(raw)
    path = write_yaml(tmp_path / "cfg" / "arms.yaml", raw)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert [ln.strip() for ln in res.stdout.splitlines()][1:] == [
        "sr.mix_prob=0,seed=0",
        "sr.mix_prob=1,sr.gan.adv_weight=0.01,seed=0",
    ]
    assert nothing_starts == []
    assert_nothing_written(tmp_path, work)


# ------------------------------------------------------------------------------------------- dry run
def test_dry_run_prints_the_quickstart_plan_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_starts: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["sweep", str(EXPERIMENTS / "quickstart.yaml"), "--dry-run"])
    assert res.exit_code == 0, (res.output, res.exception)
    lines = [ln.strip() for ln in res.stdout.splitlines()]
    assert lines[0].startswith("sweep quickstart: method grid, metric unknown/psnr")
    # the quickstart's four arms x 2 seeds; first the trials that need no degradation stage (p = 0 and
    # the pipeline oracle): they run while it trains
    arms = ["sr.mix_prob=0", "sr.lr_source=pipeline,sr.mix_prob=1"]
    arms += ["sr.lr_source=cyclegan,sr.mix_prob=0.5", "sr.lr_source=cyclegan,sr.mix_prob=1"]
    assert lines[1:] == [f"{arm},seed={s}" for arm in arms for s in (0, 1)]
    assert nothing_starts == []
    assert os.listdir(tmp_path) == []  # no .demo-data, no results/
    assert not ray.is_initialized()


@pytest.mark.parametrize("name", SHIPPED)
def test_dry_run_accepts_every_shipped_experiment(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_starts: list[str]
) -> None:
    """Every shipped file passes the schema; its dry run then checks the inputs it names. Paper-scale
    files name DIV2K and pretrained weights, absent here: those, and only those, are the problems."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["sweep", str(EXPERIMENTS / name), "--dry-run"])
    assert os.listdir(tmp_path) == []
    if name == "quickstart.yaml" or res.exit_code == 0:
        assert res.exit_code == 0, (res.output, res.exception)
        assert res.stdout.startswith(f"sweep {name.removesuffix('.yaml')}:")
        return
    assert res.exit_code == 2, (res.output, res.exception)
    head, *problems = res.stderr.strip().split("\n  - ")
    assert "problem(s) with the inputs" in head and problems, res.stderr
    for line in problems:
        assert line.startswith(("data.", "weights.vgg19", "eval.lpips")), line
        assert "folder not found" in line or "weights" in line, line


def test_dry_run_with_bad_set_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(
        app, ["sweep", str(EXPERIMENTS / "quickstart.yaml"), "--dry-run", "--set", "sr.mix_prob=2"]
    )
    assert res.exit_code == 2
    assert "quickstart.yaml" in res.stderr and "sr.mix_prob" in res.stderr
    assert os.listdir(tmp_path) == []
