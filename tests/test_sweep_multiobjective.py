"""Multi-objective sweeps: ``search.metric`` a list of ``{name, goal}``.

Spec:
* the config keeps the list (``objectives``; ``metric`` is its first) and refuses what cannot work:
  ASHA with several objectives (it stops trials on one metric: the message names ``search.scheduler``)
  and NSGA-II with one objective;
* the driver gives Optuna every objective (the study has one direction each, sampler per
  ``search.sampler``, in the sweep's RDB storage) while Tune's metric stays the first;
* on real local Ray, an Optuna NSGA-II sweep writes rows for every trial, Optuna receives both
  objectives of every trial (equal to the rows' final values), and ``csrgan results summary`` prints
  the Pareto front, which is the study's own (``study.best_trials``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from tiny_experiment import tiny
from typer.testing import CliRunner

from csrgan.config import ConfigError, validate_config
from csrgan.data.layout import resolve_data
from csrgan.storage import SweepLayout

TWO = [{"name": "unknown/psnr", "goal": "maximize"}, {"name": "bicubic/ssim", "goal": "minimize"}]
#: maximise PSNR, *minimise* SSIM: a deliberately odd pair (no LPIPS weights here) whose directions differ
DIRECTIONS = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
OPTUNA_PARAMS = {"sr.gan.lr": {"log_uniform": [1e-5, 1e-3]}, "sr.gan.adv_weight": {"uniform": [0.0, 0.01]}}


def _search(**kw: Any) -> dict[str, Any]:
    return {"method": "optuna", "metric": TWO, "num_samples": 3, "parameters": OPTUNA_PARAMS, **kw}


def _raw(tmp_path: Path, name: str = "mo", **search: Any) -> dict[str, Any]:
    return tiny(
        name,
        tmp_path / "results",
        tmp_path / "demo",
        search=_search(**search),
        sr={"mix_prob": 0.0},  # no degradation stage: these tests are about the objectives
        resources={"workers": 1, "cpus_per_worker": 1, "amp": False, "channels_last": False},
    )


# ------------------------------------------------------------------------------------------- config
def test_a_list_metric_is_kept_whole_and_its_first_is_the_metric(tmp_path: Path) -> None:
    s = validate_config(_raw(tmp_path)).search
    assert s is not None and s.multi_objective
    assert [(m.name, m.goal) for m in s.targets] == [(m["name"], m["goal"]) for m in TWO]
    assert s.metric.name == "unknown/psnr" and s.objectives[0] == s.metric
    again = validate_config(validate_config(_raw(tmp_path)).model_dump(mode="json")).search  # _sweep.json
    assert again is not None and again.targets == s.targets
    one = validate_config(_raw(tmp_path, metric={"name": "unknown/psnr"}, sampler="tpe")).search
    assert one is not None and not one.multi_objective and one.targets == [one.metric]


def test_asha_with_several_objectives_is_refused_naming_the_scheduler(tmp_path: Path) -> None:
    raw = _raw(tmp_path, method="grid", num_samples=1, parameters={"sr.gan.lr": {"values": [1e-4, 2e-4]}})
    raw["search"]["scheduler"] = {"type": "asha", "grace_period": 5, "max_t": 10}
    with pytest.raises(ConfigError, match=r"search\.scheduler 'asha'.*2 objectives.*use scheduler"):
        validate_config(raw)


def test_nsga2_with_one_objective_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sampler nsga2 is a multi-objective sampler"):
        validate_config(_raw(tmp_path, metric={"name": "unknown/psnr"}, sampler="nsga2"))


def test_every_objective_must_be_computed_on_a_test_set_with_ground_truth(tmp_path: Path) -> None:
    bad = [TWO[0], {"name": "nowhere/psnr", "goal": "maximize"}]
    with pytest.raises(ConfigError, match=r"'nowhere/psnr': no test set 'nowhere'"):
        validate_config(_raw(tmp_path, metric=bad))


# ------------------------------------------------------------------------------------------- driver
@pytest.mark.parametrize(("sampler", "cls"), [("nsga2", "NSGAIISampler"), ("tpe", "TPESampler")])
def test_the_searcher_gets_every_objective_and_the_study_one_direction_each(
    tmp_path: Path, sampler: str, cls: str
) -> None:
    from csrgan.sweep.driver import SweepPlan, _objectives_line, _search_alg

    cfg = validate_config(_raw(tmp_path, sampler=sampler, sampler_seed=3))
    layout = SweepLayout.of(cfg.storage, cfg.name)
    layout.results.mkdir(parents=True)
    plan = SweepPlan(cfg, layout, [], resume=False)
    assert plan.metric == ("unknown/psnr", "max")  # Tune's metric: the first objective
    alg = _search_alg(plan)
    assert alg.metric == ["unknown/psnr", "bicubic/ssim"] and alg.mode == ["max", "min"]
    assert type(alg._sampler).__name__ == cls
    study = optuna.load_study(study_name=cfg.name, storage=layout.optuna_url)
    assert study.directions == DIRECTIONS
    line = _objectives_line(plan)
    assert line.startswith("objectives: maximize unknown/psnr, minimize bicubic/ssim (Optuna ")
    assert "no scheduler or pruning" in line


def test_a_multi_objective_grid_says_its_objectives_and_just_runs(tmp_path: Path) -> None:
    from csrgan.sweep.driver import SweepPlan, _objectives_line, _scheduler

    raw = _raw(tmp_path, method="grid", num_samples=1, parameters={"sr.gan.lr": {"values": [1e-4, 2e-4]}})
    cfg = validate_config(raw)
    plan = SweepPlan(cfg, SweepLayout.of(cfg.storage, cfg.name), [], resume=False)
    assert plan.objectives == [("unknown/psnr", "max"), ("bicubic/ssim", "min")]
    assert "(grid: every configuration runs; the summary reports the Pareto front" in _objectives_line(plan)
    assert type(_scheduler(cfg)).__name__ == "FIFOScheduler"


def test_a_single_objective_searcher_is_unchanged(tmp_path: Path) -> None:
    from csrgan.sweep.driver import SweepPlan, _search_alg

    cfg = validate_config(_raw(tmp_path, metric={"name": "unknown/psnr"}))
    layout = SweepLayout.of(cfg.storage, cfg.name)
    layout.results.mkdir(parents=True)
    alg = _search_alg(SweepPlan(cfg, layout, [], resume=False))
    assert (alg.metric, alg.mode, type(alg._sampler).__name__) == ("unknown/psnr", "max", "TPESampler")


# ------------------------------------------------------------------------------------------ on Ray
@pytest.fixture
def _ray_shutdown():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_an_optuna_nsga2_sweep_reports_every_objective_and_prints_its_front(
    tmp_path: Path, _ray_shutdown: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from csrgan.cli.results import app as results_app
    from csrgan.cli.sweep import _print_summary
    from csrgan.data.demo import build_demo
    from csrgan.results.pareto import FRONT_COLUMN, pareto_table
    from csrgan.sweep.driver import run_sweep

    build_demo(tmp_path / "demo", seed=0)
    cfg = resolve_data(validate_config(_raw(tmp_path, sampler="nsga2")))
    lines: list[str] = []
    outcome = run_sweep(cfg, echo=lines.append, num_cpus=2)
    log = "\n".join(lines)
    assert outcome.complete and not outcome.errors, log
    assert "objectives: maximize unknown/psnr, minimize bicubic/ssim (Optuna NSGA-II" in log

    folder = tmp_path / "results" / "mo"
    df = pd.read_parquet(folder)
    assert df.trial_id.nunique() == 3 and set(df.status) == {"finished"}
    final = df[(df.phase == "gan") & (df.step == 10)]
    assert len(final) == 3 * 2 and final.psnr.notna().all() and final.ssim.notna().all()
    rows = {
        round(float(lr), 12): (
            float(g[g.test_set == "unknown"].psnr.iloc[0]),
            float(g[g.test_set == "bicubic"].ssim.iloc[0]),
        )
        for lr, g in final.groupby("param.sr.gan.lr")
    }

    study = optuna.load_study(study_name="mo", storage=SweepLayout.of(cfg.storage, "mo").optuna_url)
    assert study.directions == DIRECTIONS
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3  # each told both objectives: a missing one would have failed the trial
    told = {round(t.params["sr.gan.lr"], 12): tuple(t.values) for t in done}
    assert told.keys() == rows.keys()
    for lr, values in told.items():
        assert values == pytest.approx(rows[lr], abs=1e-9)

    by = ["sr.gan.lr", "sr.gan.adv_weight"]
    table = pareto_table(df, cfg.search.targets, by)
    ours = {round(float(v), 12) for v in table.loc[table[FRONT_COLUMN], "param.sr.gan.lr"]}
    assert ours == {round(t.params["sr.gan.lr"], 12) for t in study.best_trials}  # Optuna's own front

    res = CliRunner().invoke(results_app, ["summary", str(folder), "--by", by[0], "--by", by[1]])
    assert res.exit_code == 0, res.output
    assert "Pareto front (mo), phase gan: maximize unknown/psnr, minimize bicubic/ssim" in res.output
    assert f"{len(ours)} of 3 configuration(s) on the Pareto front" in res.output
    assert "one seed per configuration" in res.output  # optuna runs one seed: no noise estimate

    capsys.readouterr()
    _print_summary(cfg, folder, outcome.baseline)  # what `csrgan sweep` prints at its end
    printed = capsys.readouterr().out
    assert printed.index("SRGAN (GAN phase)") < printed.index("Pareto front (mo)")
