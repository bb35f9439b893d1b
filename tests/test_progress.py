"""What the terminal shows: sweep progress (ETA math, plain lines from Tune events, best so far), the
closing note under the ablation table, Ray/Tune output routed to a log file, and `csrgan train` progress.

Spec:
* ETAs are remaining steps x measured seconds per step; a sweep's ETA fills the parallel slots with the
  running trials' remaining time, then with the trials not started yet (measured overhead + steps);
* without a terminal, events are plain lines and a one-line summary comes every ``every_s`` seconds;
* "best so far" is the best of each trial's latest evaluation (what the final table uses), with its step;
* the note under the table is computed from the table: best arm per test set, spread against seed
  noise, arms below the bicubic-interpolation baseline;
* during a sweep, Ray's and Tune's chatter (and what trials print) goes to ``<sweep>/_logs/``, whose path
  is printed once; csrgan's stage messages and the warnings still reach the terminal;
* ``csrgan train`` prints step/iters, losses, s/step and ETA at every report.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from csrgan.results.notes import arm_label, closing_note
from csrgan.sweep.eta import fmt_duration, remaining_s, sweep_eta
from csrgan.sweep.logs import MARK, capture_ray_output, parse_stage_line, stage_message
from csrgan.sweep.progress import PlainView, ProgressCallback, SweepProgress, trial_label

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[")
METRIC = "unknown/psnr"


# ------------------------------------------------------------------------------------------ ETA math
def test_remaining_seconds_are_steps_left_times_seconds_per_step() -> None:
    assert remaining_s(50, 200, 0.5) == 75.0
    assert remaining_s(50, 200, 0.5, since_s=10.0) == 65.0  # time since the measurement counts as spent
    assert remaining_s(190, 200, 0.5, since_s=60.0) == 0.0  # never negative
    assert remaining_s(50, None, 0.5) is None and remaining_s(50, 200, None) is None


def test_sweep_eta_fills_the_slots_with_running_then_pending_trials() -> None:
    # 2 slots free at 10 s and 30 s; 3 trials of 20 s to start: 10+20=30, then 30+20=50 (twice)
    assert sweep_eta([10.0, 30.0], pending=3, per_trial_s=20.0, slots=2) == 50.0
    assert sweep_eta([10.0], pending=2, per_trial_s=5.0, slots=1) == 20.0  # one at a time
    assert sweep_eta([], pending=3, per_trial_s=10.0, slots=2) == 20.0  # idle slots start at once
    assert sweep_eta([10.0, 30.0], pending=0, per_trial_s=None, slots=2) == 30.0  # nothing left to start
    assert sweep_eta([None, 30.0], pending=0, per_trial_s=20.0, slots=2) is None
    assert sweep_eta([30.0], pending=1, per_trial_s=None, slots=2) is None


def test_durations_read_as_minutes_and_seconds() -> None:
    assert [fmt_duration(s) for s in (None, 42, 185, 3720)] == ["?", "42s", "3m05s", "1h02m"]


# --------------------------------------------------------------------- fake Tune events, plain lines
class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeTrial:
    """What ProgressCallback reads from Tune's Trial."""

    trial_id: str
    params: dict[str, Any]
    seed: int = 0
    status: str = "PENDING"
    last_result: dict[str, Any] = field(default_factory=dict)
    local_path: str | None = None
    path: str = "/results/_tune/trial"

    @property
    def config(self) -> dict[str, Any]:
        return {"trial": {"params": self.params, "seed": self.seed}}


def _report(step: int, value: float | None, sps: float = 0.4, iters: int = 10) -> dict[str, Any]:
    r = {"phase": "gan", "step": step, "iters": iters, "time/step_s": sps, "loss/g": 0.1}
    return r | ({METRIC: value} if value is not None else {})


@pytest.fixture
def watched() -> tuple[ProgressCallback, SweepProgress, list[str], Clock]:
    clock, lines = Clock(), []
    progress = SweepProgress(PlainView(lines.append, every_s=30, clock=clock), METRIC, "max", total=3,
                             slots=2, iters=10, clock=clock)  # fmt: skip
    cb = ProgressCallback(metric=METRIC, mode="max", total=3)
    cb.setup(total_num_samples=3)
    ProgressCallback.attach(progress)
    yield cb, progress, lines, clock
    ProgressCallback.attach(None)


def test_plain_lines_from_a_sequence_of_tune_events(watched) -> None:  # noqa: ANN001
    cb, progress, lines, clock = watched
    a, b, c = (
        FakeTrial("t_0", {"sr.mix_prob": 0.0}),
        FakeTrial("t_1", {"sr.mix_prob": 1.0}),
        FakeTrial("t_2", {"sr.mix_prob": 0.5}),
    )
    cb.on_step_begin(0, [a, b, c])
    for t in (a, b):
        t.status = "RUNNING"
        cb.on_trial_start(0, [a, b, c], t)
    clock.t += 12
    cb.on_trial_result(1, [a, b, c], a, _report(5, 24.0))
    clock.t += 20  # 32 s since the view was made: the next tick prints a summary
    cb.on_trial_result(2, [a, b, c], b, _report(5, 23.0))
    a.last_result = _report(10, 25.0)
    cb.on_trial_result(3, [a, b, c], a, a.last_result)
    cb.on_trial_complete(3, [a, b, c], a)
    b.local_path = "/results/_tune/t_1"
    cb.on_trial_error(4, [a, b, c], b)

    text = "\n".join(lines)
    assert not ANSI.search(text)
    assert lines[0].endswith("start    t_0 (mix_prob=0.0, seed=0)") and lines[0].startswith("[    0s]")
    assert "eval     t_0 (mix_prob=0.0, seed=0) step 5/10: unknown/psnr 24.0000" in text
    summary = next(line for line in lines if "running," in line)
    assert summary.startswith("[   32s] 2 running, 0/3 done, 0 failed (t_0 gan 5/10; t_1 gan 5/10); ETA ")
    assert "best unknown/psnr 24.0000 (t_0 (mix_prob=0.0, seed=0), step 5/10)" in summary
    assert "done     t_0 (mix_prob=0.0, seed=0) step 10/10: unknown/psnr 25.0000 in 32s" in text
    assert "FAILED   t_1 (mix_prob=1.0, seed=0): see /results/_tune/t_1/error.txt" in text
    assert text.count("running,") == 1  # one summary per 30 s, not one per event
    assert progress.counts() == {"pending": 1, "running": 0, "finished": 1, "diverged": 0, "stopped": 0,
                                 "error": 1}  # fmt: skip


def test_a_trial_stopped_before_its_last_step_says_so(watched) -> None:  # noqa: ANN001
    cb, _, lines, _ = watched
    t = FakeTrial("t_0", {"sr.mix_prob": 0.0}, last_result=_report(5, 20.0))
    cb.on_trial_start(0, [t], t)
    cb.on_trial_complete(1, [t], t)
    assert "stopped  t_0 (mix_prob=0.0, seed=0) step 5/10: unknown/psnr 20.0000" in lines[-1]


def test_best_so_far_uses_each_trials_latest_evaluation_and_its_step(watched) -> None:  # noqa: ANN001
    cb, progress, _, _ = watched
    a, b = FakeTrial("t_0", {"sr.mix_prob": 0.0}), FakeTrial("t_1", {"sr.mix_prob": 1.0})
    for t in (a, b):
        cb.on_trial_start(0, [a, b], t)
    cb.on_trial_result(1, [a, b], a, _report(5, 30.0))  # a great intermediate value ...
    cb.on_trial_result(2, [a, b], a, _report(8, 30.0))  # ... carried forward by a checkpoint-only report
    assert progress.best().trial_id == "t_0" and progress.best().value_step == 5
    cb.on_trial_result(3, [a, b], b, _report(10, 25.0))
    cb.on_trial_result(4, [a, b], a, _report(10, 20.0))  # ... that a's final evaluation replaces
    best = progress.best()
    assert (best.trial_id, best.value, best.value_step) == ("t_1", 25.0, 10)
    assert "best unknown/psnr 25.0000 (t_1 (mix_prob=1.0, seed=0), step 10/10)" in progress.summary()
    progress.mode = "min"
    assert progress.best().trial_id == "t_0"


def test_the_sweep_eta_counts_running_and_not_started_trials(watched) -> None:  # noqa: ANN001
    cb, progress, _, clock = watched
    a, b = FakeTrial("t_0", {"sr.mix_prob": 0.0}), FakeTrial("t_1", {"sr.mix_prob": 1.0})
    for t in (a, b):
        cb.on_trial_start(0, [a, b], t)
    clock.t += 40
    cb.on_trial_result(1, [a, b], a, _report(50, 24.0, sps=0.4, iters=200))  # overhead 40-20 = 20 s
    cb.on_trial_result(1, [a, b], b, _report(100, 24.0, sps=0.4, iters=200))  # overhead 40-40 = 0 s
    a_t, b_t = progress.trials["t_0"], progress.trials["t_1"]
    assert progress.trial_eta(a_t) == pytest.approx(60.0) and progress.trial_eta(b_t) == pytest.approx(40.0)
    assert progress.per_trial_s() == pytest.approx(10.0 + 200 * 0.4)  # mean overhead + steps x s/step
    assert progress.eta() == pytest.approx(40.0 + 90.0)  # the 3rd trial starts when b's slot frees
    clock.t += 10  # no report since: the estimates count down
    assert progress.eta() == pytest.approx(30.0 + 90.0)
    # a trial building its pre-training stage: the stage's remaining steps, then its GAN steps
    c = FakeTrial("t_2", {"sr.mix_prob": 0.5})
    cb.on_trial_start(2, [a, b, c], c)
    progress.mark_line(stage_message("pretrain-abc123", "step 200/400, 0.250 s/step", "t_2"))
    c_t = progress.trials["t_2"]
    assert c_t.phase == "pretrain" and (c_t.step, c_t.iters) == (200, 400)
    assert progress.trial_eta(c_t) == pytest.approx(200 * 0.25 + 10 * 0.4)  # GAN: 10 steps at 0.4 s/step


def test_stage_lines_are_shown_once_and_progress_is_kept(watched) -> None:  # noqa: ANN001
    cb, progress, lines, _ = watched
    t = FakeTrial("t_0", {"sr.mix_prob": 0.0})
    cb.on_trial_start(0, [t], t)
    progress.mark_line(stage_message("pretrain-abc123", "building", "t_0"))
    progress.mark_line(stage_message("pretrain-abc123", "step 5/6, 0.100 s/step", "t_0"))
    progress.mark_line(stage_message("cyclegan-def456", "building"))  # a driver task: no trial
    assert lines[-2].endswith("stage pretrain-abc123: building [trial t_0]")
    assert lines[-1].endswith("stage cyclegan-def456: building")
    assert not any("step 5/6" in line for line in lines)  # progress updates the state, not the log
    assert progress.stages["pretrain-abc123"].step == 5
    assert progress.trials["t_0"].phase == "pretrain"


def test_stage_messages_round_trip() -> None:
    line = stage_message("pretrain-3f2a91c0e4b1", "step 200/400, 0.210 s/step", "4582e_00000")
    assert line == f"{MARK}stage pretrain-3f2a91c0e4b1: step 200/400, 0.210 s/step [trial 4582e_00000]"
    p = parse_stage_line(line)
    assert (p.stage, p.trial, p.step, p.iters, p.sps) == (
        "pretrain-3f2a91c0e4b1",
        "4582e_00000",
        200,
        400,
        0.21,
    )
    q = parse_stage_line("\x1b[36m" + stage_message("cyclegan-ab", "building"))
    assert (q.stage, q.text, q.trial, q.step) == ("cyclegan-ab", "building", None, None)
    assert parse_stage_line("demo set is up to date") is None


def test_trial_labels_for_grid_and_optuna_configs() -> None:
    assert trial_label({"trial": {"params": {"sr.mix_prob": 0.5}, "seed": 1}}) == "mix_prob=0.5, seed=1"
    assert trial_label({"sr.gan.lr": 0.000123456, "seed": 0}) == "lr=0.000123, seed=0"


# ------------------------------------------------------------------------------------------ the note
def _table(
    means: dict[str, list[float]], stds: dict[str, list[float]] | None = None, **params: list
) -> pd.DataFrame:
    cols: dict[str, Any] = {f"param.{k}": v for k, v in params.items()}
    n = len(next(iter(means.values())))
    cols |= {"n": [2] * n, "n_diverged": [0] * n, "n_unfinished": [0] * n}
    for col, vals in means.items():
        cols[f"{col} mean"] = vals
        cols[f"{col} std"] = (stds or {}).get(col, [float("nan")] * n)
        cols[f"{col} n"] = [2] * n
    return pd.DataFrame(cols)


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0]])
def test_note_names_the_best_arm_whatever_the_row_order(order: list[int]) -> None:
    t = _table({"unknown/psnr": [25.1, 25.6, 25.3]}, {"unknown/psnr": [0.05, 0.04, 0.06]}, **{
        "sr.mix_prob": [0.0, 0.5, 1.0]})  # fmt: skip
    t = t.iloc[order].reset_index(drop=True)
    note = closing_note(t, "unknown/psnr")
    assert note[0].startswith("unknown: best mix_prob=0.5 (psnr 25.60); spread 0.50 between arms > 2 x")
    assert "differ by more than seed noise" in note[0]


def test_note_says_when_the_spread_is_within_seed_noise() -> None:
    t = _table(
        {"unknown/psnr": [25.10, 25.15]}, {"unknown/psnr": [0.10, 0.12]}, **{"sr.mix_prob": [0.0, 1.0]}
    )
    (line,) = closing_note(t, "psnr")
    assert "best mix_prob=1 (psnr 25.15)" in line and "within seed noise, read the arms as a tie" in line
    single = _table({"unknown/psnr": [25.10, 25.15]}, **{"sr.mix_prob": [0.0, 1.0]})  # one seed: no std
    assert "one seed per arm, so no seed std" in closing_note(single, "psnr")[0]


def test_note_flags_arms_below_the_bicubic_baseline_per_test_set() -> None:
    t = _table({"unknown/psnr": [25.1, 25.9], "bicubic/psnr": [29.0, 29.5]}, **{"sr.mix_prob": [0.0, 1.0]})
    t.attrs["test_sets"] = ["unknown", "bicubic"]
    note = closing_note(t, "psnr", {"unknown/psnr": 25.5, "bicubic/psnr": 30.9})
    assert "unknown: below the bicubic-interpolation baseline (25.50): mix_prob=0 (25.10)" in note
    assert any(
        n.startswith("bicubic: EVERY arm is below the bicubic-interpolation baseline (30.90") for n in note
    )
    above = closing_note(t, "psnr", {"unknown/psnr": 20.0})
    assert "unknown: every arm beats the bicubic-interpolation baseline (20.00)" in above
    assert not any("bicubic-interpolation" in n for n in closing_note(t, "psnr"))  # no baseline, no claim


def test_note_for_a_lower_is_better_metric_and_left_out_trials() -> None:
    t = _table({"unknown/lpips": [0.30, 0.20]}, **{"sr.mix_prob": [0.0, 1.0]})
    t.loc[0, "n_diverged"] = 1
    note = closing_note(t, "lpips")
    assert note[0].startswith("unknown: best mix_prob=1 (lpips 0.2000)")
    assert note[-1] == "1 trial(s) diverged or failed and are left out of the means"


def test_arm_labels_skip_parameters_an_arm_does_not_set() -> None:
    row = pd.Series({"param.sr.mix_prob": 1.0, "param.sr.lr_source": float("nan")})
    assert arm_label(row, ["param.sr.mix_prob", "param.sr.lr_source"]) == "mix_prob=1"


# -------------------------------------------------------------------------------------- log routing
def test_ray_and_tune_output_goes_to_the_log_and_warnings_once_to_the_terminal(tmp_path: Path) -> None:
    shown, marks = [], []
    path = tmp_path / "_logs" / "sweep-x.log"
    ray_logger = logging.getLogger("ray")
    before = ray_logger.handlers[:]
    with capture_ray_output(path, warn=shown.append, on_mark=marks.append) as out:
        logging.getLogger("ray.tune").info("Wrote the latest version of all result files")
        logging.getLogger("ray.train").warning("slow storage: took 12.5 s")
        logging.getLogger("ray.train").warning("slow storage: took 13.1 s")  # the same warning again
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a deprecated knob", DeprecationWarning, stacklevel=1)
        out.worker_lines({"pid": 41, "task_name": "run_trial", "is_err": True, "lines": [
            "\x1b[36mINFO Checkpoint successfully created at: /x\x1b[0m",
            stage_message("pretrain-abc", "building", "t_0"),
            "UserWarning: torch says something",
            "Traceback (most recent call last):",
        ]})  # fmt: skip
        mark = f"{MARK}[gan] step 2/4"  # a Train worker copies its stdout onto stderr: shown once
        out.worker_lines({"pid": 7, "actor_name": "RayTrainWorker", "is_err": False, "lines": [mark]})
        out.worker_lines({"pid": 7, "actor_name": "RayTrainWorker", "is_err": True, "lines": [mark]})
    assert ray_logger.handlers == before  # put back
    log = path.read_text()
    assert "Wrote the latest version of all result files" in log and "slow storage: took 13.1 s" in log
    assert "(run_trial pid=41, stderr) INFO Checkpoint successfully created at: /x" in log
    assert "Traceback (most recent call last):" in log and "DeprecationWarning: a deprecated knob" in log
    assert not ANSI.search(log)
    assert marks == [stage_message("pretrain-abc", "building", "t_0"), f"{MARK}[gan] step 2/4"]
    assert shown == [
        "warning (ray): slow storage: took 12.5 s",
        "warning (python): DeprecationWarning: a deprecated knob",
        "warning (run_trial pid=41): UserWarning: torch says something",
    ]
    assert out.n_warnings == 4 and len(out.seen) == 3


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from csrgan.data.demo import build_demo

    out = tmp_path_factory.mktemp("demo")
    build_demo(out, seed=0)
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_a_real_sweep_keeps_ray_chatter_in_its_log(tmp_path: Path, demo_dir: Path) -> None:
    from tiny_experiment import tiny

    storage = tmp_path / "results"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny("chatty", storage, demo_dir)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "csrgan.cli.app", "sweep", str(path), "--num-cpus", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, (out[-3000:], err[-3000:])
    logs = sorted((storage / "chatty" / "_logs").glob("sweep-*.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    assert "Started a local Ray instance" in log and "INFO ray.tune" in log  # Ray's and Tune's lines ...
    assert "(run_trial pid=" in log  # ... and what the trials printed
    assert out.count(str(logs[0])) == 1 and str(logs[0]) not in err  # its path, once
    for stream in (out, err):
        assert "Checkpoint successfully created" not in stream and "INFO tune.py" not in stream
        assert not ANSI.search(stream)  # not a terminal: no escape codes
    # every stage build and reuse, one spelling of stage ids: <stage>-<key>, the folder name
    stage_dirs = {p.name for p in (storage / "_stages").iterdir()}
    shown = set(re.findall(r"stage ((?:cyclegan|pretrain)\S*?):", out))
    assert shown == stage_dirs, (shown, stage_dirs)
    assert re.search(r"stage pretrain-\w+: building \[trial \w+\]", out)
    assert re.search(r"stage cyclegan-\w+: reused \(.*\) \[trial \w+\]", out)
    assert not re.search(r"stage (cyclegan|pretrain) [0-9a-f]", out)
    assert re.search(r"done +\w+ \(mix_prob=1.0, seed=0\) step 10/10: unknown/psnr", out)
    assert "Reading this table (psnr" in out and "Note: short CPU runs" not in out
    assert "EVERY arm is below the bicubic-interpolation baseline" in out  # 10 steps learn nothing


# --------------------------------------------------------------------------------- csrgan train
def test_train_prints_steps_losses_and_eta_without_a_terminal(tmp_path: Path) -> None:
    import typer
    from test_cli_train import tiny_config
    from typer.testing import CliRunner

    from csrgan.cli import train as train_cli

    app = typer.Typer()
    app.add_typer(train_cli.app, name="train")
    cfg = tiny_config(tmp_path)
    r = CliRunner().invoke(app, ["train", "srgan", str(cfg), "--workers", "0", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for stage in ("pretrain", "gan"):
        assert f"[{stage}] 4 steps; a line at each evaluation or checkpoint" in lines
        (mid,) = [ln for ln in lines if ln.startswith(f"[{stage}] step 2/4 · ")]
        assert re.search(r" · \d+\.\d{3} s/step · ETA \d+s · synth/psnr \d+\.\d{4}, synth/ssim", mid), mid
        assert any(ln.startswith(f"[{stage}] step 4/4 · ") and "ETA 0s" in ln for ln in lines)
    assert "pixel " in r.output and "d_real " in r.output  # the losses, by name
    assert not ANSI.search(r.output)


def test_train_bar_on_a_terminal_shows_step_rate_and_eta() -> None:
    from rich.console import Console

    from csrgan.cli.live import TrainBar

    buf = io.StringIO()
    bar = TrainBar("pretrain", 400, console=Console(file=buf, force_terminal=True, width=160))
    bar.report({"step": 200, "iters": 400, "time/step_s": 0.25, "loss/pixel": 0.0123, "synth/psnr": 21.5})
    bar.close()
    text = ANSI.sub("", re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", buf.getvalue()))
    assert "200/400" in text and "0.250 s/step" in text and "ETA 50s" in text and "pixel 0.0123" in text
    assert "[pretrain] step 200/400: synth/psnr 21.5000" in text


def test_live_sweep_table_shows_each_trial_and_the_sweep_eta(watched) -> None:  # noqa: ANN001
    from rich.console import Console

    from csrgan.cli.live import sweep_table

    cb, progress, _, clock = watched
    a = FakeTrial("t_0", {"sr.mix_prob": 0.0})
    cb.on_trial_start(0, [a], a)
    clock.t += 10
    cb.on_trial_result(1, [a], a, _report(5, 24.0, sps=0.4))
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(sweep_table(progress))
    text = console.file.getvalue()
    row = next(line for line in text.splitlines() if line.startswith("t_0"))
    assert re.search(r"mix_prob=0.0, seed=0 +gan +5/10 +24.0000 @5 +0.400 +running +2s", row), row
    assert "2 trial(s) not started" in text
    assert "1 running · 0/3 done · 0 failed" in text and "best unknown/psnr 24.0000" in text


def test_failed_trials_headline_is_found_in_ray_260_error_text() -> None:
    """Tune's error.txt in Ray 2.60: a coloured ``ray::...`` line replaces the ``Traceback`` header."""
    from csrgan.sweep.driver import error_headline

    text = (
        "Failure # 1 (occurred at 2026-12-01_16-17-48)\n"
        "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=30501, ip=127.0.0.1, repr=run_trial)\n"
        "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/work/main/csrgan/sweep/trial.py", line 210, in run_trial\n'
        "    stages = build_shared_stages(cfg, runtime.layout)\n"
        "csrgan.train.degradation.PoorStageError: the degradation stage at /s is POOR: nothing learned\n"
        "Failure # 2 (occurred at 2026-12-01_16-17-53)\n"
        "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=30564, ip=127.0.0.1, repr=run_trial)\n"
        '  File "/work/main/csrgan/sweep/trial.py", line 210, in run_trial\n'
        "ValueError: the retry failed too\n"
    )
    assert error_headline(text) == "ValueError: the retry failed too"
    assert error_headline(text.split("Failure # 2")[0]).startswith(
        "csrgan.train.degradation.PoorStageError: "
    )
