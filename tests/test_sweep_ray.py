"""Sweeps on a real local Ray cluster (loopback only), with tiny models on the demo data.

Spec:
* a grid sweep writes one Parquet row per (trial, evaluation step, test set), trains the CycleGAN once
  for all p > 0 trials, and a later sweep under the same storage reuses every stage;
* a diverging trial ends ``diverged`` and the sweep goes on;
* ASHA stops a clearly worse trial (``stopped``); Optuna proposes trials and keeps its study on disk;
* Ctrl-C and kill -9 of the driver lose no finished result; ``--resume`` finishes the rest from
  checkpoints with no duplicate rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from tiny_experiment import tiny, wait_for

from csrgan.config import validate_config
from csrgan.data.layout import resolve_data
from csrgan.metrics import PROTOCOL

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CSRGAN = [sys.executable, "-m", "csrgan.cli.app"]
KEY = ["trial_id", "phase", "step", "test_set"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from csrgan.data.demo import build_demo

    out = tmp_path_factory.mktemp("demo")
    build_demo(out, seed=0)
    return out


@pytest.fixture(autouse=True)
def _ray_shutdown():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run(raw: dict[str, Any], **kw: Any):
    from csrgan.sweep.driver import run_sweep

    lines: list[str] = []
    outcome = run_sweep(resolve_data(validate_config(raw)), echo=lines.append, num_cpus=2, **kw)
    return outcome, "\n".join(lines)


def assert_unique_rows(df: pd.DataFrame) -> None:
    dupes = df[df.duplicated(KEY, keep=False)]
    assert dupes.empty, f"duplicate rows:\n{dupes[KEY]}"


def test_grid_sweep_rows_and_stage_reuse(tmp_path: Path, demo_dir: Path) -> None:
    storage = tmp_path / "results"
    grid = {
        "method": "grid",
        "metric": {"name": "unknown/psnr"},
        "parameters": {"sr.mix_prob": {"values": [0.0, 0.5, 1.0]}},
        "seeds": [0],
    }
    outcome, log = run(tiny("grid", storage, demo_dir, search=grid))
    assert outcome.complete, log

    df = pd.read_parquet(storage / "grid")  # the plain pandas call users make
    assert df.trial_id.nunique() == 3
    assert set(df.status) == {"finished"}
    assert sorted(df["param.sr.mix_prob"].unique()) == [0.0, 0.5, 1.0]
    assert set(df.test_set) == {"bicubic", "unknown"}
    assert (df.protocol == PROTOCOL.id).all()
    assert df.psnr.notna().all() and df.ssim.notna().all() and df.lpips.isna().all()  # lpips not asked
    gan = df[df.phase == "gan"]
    # GAN phase: evaluations at steps 5 and 10, on 2 test sets, for each of 3 trials
    assert sorted(gan.step.unique()) == [5, 10]
    assert len(gan) == 3 * 2 * 2
    assert (df[df.phase == "pretrain"].groupby("trial_id").size() == 2).all()
    assert_unique_rows(df)

    # The CycleGAN was trained once (by the driver's stage task) for the two p > 0 trials.
    stages = storage / "_stages"
    cyclegans = sorted(stages.glob("cyclegan-*"))
    assert len(cyclegans) == 1
    info = json.loads((cyclegans[0] / "stage.json").read_text())
    assert info["status"] == "finished" and info["built_by"] == "driver"
    keys = df.groupby("param.sr.mix_prob").cyclegan_key.unique()
    assert df[df["param.sr.mix_prob"] == 0.0].cyclegan_key.isna().all()
    assert set(keys[0.5]) == set(keys[1.0]) == {cyclegans[0].name.split("-", 1)[1]}
    # every row says where its non-bicubic LR came from and how good that degradation stage was
    # (typed via read_results: the p = 0 files hold these columns as all-null)
    from csrgan.results import read_results

    typed = read_results(storage / "grid")
    assert (typed["param.sr.lr_source"] == "cyclegan").all()
    p0, pos = typed[typed["param.sr.mix_prob"] == 0.0], typed[typed["param.sr.mix_prob"] > 0]
    assert p0.lr_source_id.isna().all() and p0.degradation_verdict.isna().all()
    assert (pos.lr_source_id == "cyclegan-" + pos.cyclegan_key).all()
    verdict = json.loads((cyclegans[0] / "stage.json").read_text())["quality"]["verdict"]
    assert (pos.degradation_verdict == verdict).all() and verdict in ("ok", "poor")
    assert (pos.degradation_accepted_poor == (verdict == "poor")).all()  # tiny: cyclegan.accept_poor
    assert pos.degradation_lowfreq_psnr.notna().all() and pos.degradation_hf_w1_ratio.notna().all()
    pretrains = sorted(stages.glob("pretrain-*"))
    assert len(pretrains) == 3  # pre-training depends on p (the LR source), so one per p
    _assert_rows_lead_to_their_files(typed, storage)
    mtimes = {p: (p / "stage.json").stat().st_mtime for p in [*cyclegans, *pretrains]}

    # A second sweep under the same storage reuses every stage and only trains its GAN phases.
    outcome2, log2 = run(tiny("grid_again", storage, demo_dir, search=grid))
    assert outcome2.complete, log2
    assert "reused" in log2
    assert sorted(stages.glob("*-*")) == sorted(mtimes)
    assert {p: (p / "stage.json").stat().st_mtime for p in mtimes} == mtimes
    df2 = pd.read_parquet(storage / "grid_again")
    assert set(df2.status) == {"finished"} and df2.trial_id.nunique() == 3


def _assert_rows_lead_to_their_files(df: pd.DataFrame, storage: Path) -> None:
    """Each row names its run folder, the checkpoint of its step and its grid; they exist and are right:
    the final step's checkpoint is the loadable final/ artefact, the grid is that step's picture, and the
    bicubic baseline of the test set is a column equal to the driver's measurement."""
    meta = json.loads((storage / "grid" / "_sweep.json").read_text())["bicubic_baseline"]
    for r in df.itertuples():
        assert (storage / r.run_dir).is_dir(), r.run_dir
        assert r.grid == f"{r.run_dir}/grids/{r.phase}/{r.test_set}_step{r.step}.png"
        assert (storage / r.grid).is_file()
        assert r.baseline_psnr == meta[f"{r.test_set}/psnr"] and r.baseline_ssim == meta[f"{r.test_set}/ssim"]
    gan, pre = df[df.phase == "gan"], df[df.phase == "pretrain"]
    assert (gan.run_dir == "grid/_trials/" + gan.trial_id).all()
    assert (pre.run_dir == "_stages/pretrain-" + pre.pretrain_key).all()
    final = df[(df.step == 10) | (df.phase == "pretrain")]
    assert (final.checkpoint == final.run_dir + "/final").all()
    assert all((storage / c / "generator.pt").is_file() for c in final.checkpoint)
    mid = gan[gan.step == 5]  # checkpoint_every 5: the step checkpoint (the newest two are kept)
    assert (mid.checkpoint == mid.run_dir + "/checkpoints/step_00000005").all()
    assert all((storage / c / "state.pt").is_file() for c in mid.checkpoint)


def test_diverged_trial_is_marked_and_sweep_goes_on(tmp_path: Path, demo_dir: Path) -> None:
    storage = tmp_path / "results"
    search = {
        "method": "grid",
        "metric": {"name": "unknown/psnr"},
        "parameters": {"sr.gan.lr": {"values": [1e-4, 1e30]}},
        "seeds": [0],
    }
    raw = tiny("div", storage, demo_dir, search=search, sr={"mix_prob": 0.0})
    outcome, log = run(raw)
    assert outcome.complete, log
    df = pd.read_parquet(storage / "div")
    status = df.groupby("param.sr.gan.lr").status.unique()
    assert list(status[1e-4]) == ["finished"]
    assert list(status[1e30]) == ["diverged"]
    assert sorted(outcome.statuses.values()) == ["diverged", "finished"]
    assert not outcome.errors and not outcome.stage_errors  # diverged is a result, not an error


def test_a_trial_in_error_makes_the_sweep_exit_1_with_why_after_writing_the_rest(
    tmp_path: Path, demo_dir: Path
) -> None:
    """The 10-iteration degradation stage is the identity, so the quality gate refuses it: the p = 1 trial
    ends in error, the p = 0 trial finishes and its rows are written, and the command says which and why."""
    storage = tmp_path / "results"
    raw = tiny("gate", storage, demo_dir)
    raw["cyclegan"] = {**raw["cyclegan"], "accept_poor": False}
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [*CSRGAN, "sweep", str(path), "--num-cpus", "2"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    err = proc.stderr
    assert "1 trial(s) and 1 stage(s) ended in error" in err, err[-3000:]
    assert "sr.mix_prob=1.0" in err and "PoorStageError" in err and "REFUSED by the quality gate" in err
    df = pd.read_parquet(storage / "gate")
    p0, p1 = df[df["param.sr.mix_prob"] == 0.0], df[df["param.sr.mix_prob"] == 1.0]
    assert set(p0["status"]) == {"finished"} and "gan" in set(p0["phase"])
    assert set(p1["status"]) <= {"error"}  # whatever it wrote before the stage was refused says so
    meta = json.loads((storage / "gate" / "_sweep.json").read_text())
    assert len(meta["runs"][-1]["errors"]) == 1


def test_asha_stops_a_clearly_worse_trial(tmp_path: Path, demo_dir: Path) -> None:
    storage = tmp_path / "results"
    # Trials run one at a time (good first). At the first rung (step 5) the wrecked trial (Adam lr 0.5
    # moves every weight by ~0.5 per step) is far below the first one and ASHA (rf 2) stops it.
    search = {
        "method": "grid",
        "metric": {"name": "unknown/psnr"},
        "parameters": {"sr.gan.lr": {"values": [1e-4, 0.5]}},
        "seeds": [0],
        "scheduler": {"type": "asha", "grace_period": 5, "max_t": 10, "reduction_factor": 2},
    }
    raw = tiny(
        "asha",
        storage,
        demo_dir,
        search=search,
        sr={"mix_prob": 0.0},
        resources={"workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
    )
    outcome, log = run(raw)
    assert outcome.complete, log
    df = pd.read_parquet(storage / "asha")
    gan = df[df.phase == "gan"]
    last_step = gan.groupby("param.sr.gan.lr").step.max()
    status = df.groupby("param.sr.gan.lr").status.first()
    assert (last_step[1e-4], status[1e-4]) == (10, "finished")
    assert (last_step[0.5], status[0.5]) == (5, "stopped")


def test_optuna_sweep_keeps_its_study(tmp_path: Path, demo_dir: Path) -> None:
    import optuna

    storage = tmp_path / "results"
    search = {
        "method": "optuna",
        "metric": {"name": "unknown/psnr", "goal": "maximize"},
        "num_samples": 3,
        "parameters": {
            "sr.gan.lr": {"log_uniform": [1e-5, 1e-3]},
            "sr.gan.adv_weight": {"uniform": [0.0, 0.01]},
        },
    }
    raw = tiny("opt", storage, demo_dir, search=search, sr={"mix_prob": 0.0})
    outcome, log = run(raw)
    assert outcome.complete, log
    df = pd.read_parquet(storage / "opt")
    assert df.trial_id.nunique() == 3 and set(df.status) == {"finished"}
    assert df["param.sr.gan.lr"].between(1e-5, 1e-3).all()
    assert df["param.sr.gan.adv_weight"].between(0.0, 0.01).all()
    assert len(list((storage / "_stages").glob("pretrain-*"))) == 1  # GAN-phase params share pre-training
    study = optuna.load_study(study_name="opt", storage=f"sqlite:///{storage / 'opt' / '_optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3 and all(t.value is not None for t in done)


def _statuses(folder: Path) -> dict[str, str]:
    out = {}
    for f in folder.glob("trial-*.parquet"):
        with contextlib.suppress(OSError, ValueError):
            out[f.stem] = str(pd.read_parquet(f).status.iloc[0])
    return out


def test_interrupt_and_kill_then_resume_lose_nothing(tmp_path: Path, demo_dir: Path) -> None:
    storage = tmp_path / "results"
    search = {
        "method": "grid",
        "metric": {"name": "unknown/psnr"},
        "parameters": {"sr.mix_prob": {"values": [0.0]}, "sr.gan.adv_weight": {"values": [0.0, 1e-3, 2e-3]}},
        "seeds": [0],
    }
    raw = tiny(
        "resume",
        storage,
        demo_dir,
        search=search,
        sr={
            "mix_prob": 0.0,
            "gan": {"iters": 40, "content": {"type": "mse"}},
            "eval_every": 10,
            "checkpoint_every": 10,
        },
        resources={"workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
    )
    cfg_path = tmp_path / "resume.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    folder = storage / "resume"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*CSRGAN, "sweep", str(cfg_path), "--num-cpus", "2", *extra],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    procs: list[subprocess.Popen] = []
    try:
        # 1. Ctrl-C once the first trial finished: exit code 3 and the resume command.
        p = start()
        procs.append(p)
        wait_for(lambda: "finished" in _statuses(folder).values(), 240, "a finished trial", p)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 3, out
        assert "--resume" in out
        finished_first = {t for t, s in _statuses(folder).items() if s == "finished"}
        frozen = {t: pd.read_parquet(folder / f"{t}.parquet") for t in finished_first}

        # 2. Resume, then kill -9 the driver while a later trial is mid-way (it has checkpoints).
        p = start("--resume")
        procs.append(p)
        wait_for(
            lambda: any(
                s == "running" and (pd.read_parquet(folder / f"{t}.parquet").step >= 20).any()
                for t, s in _statuses(folder).items()
            ),
            240,
            "a running trial past step 20",
            p,
        )
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)

        # 3. Resume again: everything finishes, nothing is duplicated, finished files are untouched.
        p = start("--resume")
        procs.append(p)
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the driver's embedded Ray, if it outlived it

    df = pd.read_parquet(folder)
    assert df.trial_id.nunique() == 3 and set(df.status) == {"finished"}, df.groupby(
        "trial_id"
    ).status.first()
    assert_unique_rows(df)
    assert sorted(
        df[df.phase == "gan"].groupby("trial_id").step.apply(lambda s: tuple(sorted(set(s)))).unique()
    ) == [(10, 20, 30, 40)]
    for t, before in frozen.items():
        pd.testing.assert_frame_equal(pd.read_parquet(folder / f"{t}.parquet"), before)
    # The killed trial resumed from its checkpoint: its Tune results never restart at step 10.
    for result_json in (folder / "_tune").glob("*/result.json"):
        steps = [json.loads(line)["step"] for line in result_json.read_text().splitlines() if line.strip()]
        assert steps == sorted(steps), f"{result_json}: steps went back (restarted from scratch?): {steps}"
