"""Spec of learning-rate schedules as data (``sr.pretrain.schedule``, ``sr.gan.schedule``).

* ``constant`` (the default), ``multistep`` (``lr *= gamma`` at each milestone iteration) and ``cosine``
  (to ``eta_min`` at the phase's last iteration), built by :func:`csrgan.train.schedules.build_schedule`
  with the phase's ``iters``; :func:`describe` is the row's ``lr_schedule``.
* Both phases schedule every optimiser (G, and D in the GAN phase), stepped once per iteration; every
  report carries ``lr`` (G's rate for the next update) and ``setting/lr_schedule``.
* A run resumed across a milestone, or in the middle of a cosine, ends bit for bit like a straight run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from test_train_resume import CrashAfterCheckpoint, _assert_identical, _Crash, make_images, resume_config

from csrgan.config import ScheduleSpec, validate_config
from csrgan.train import sampling
from csrgan.train.checkpoint import load_state
from csrgan.train.context import LocalContext
from csrgan.train.schedules import build_schedule, describe, lr_now
from csrgan.train.srgan import train_sr


def _rates(spec: dict[str, Any], iters: int, lr: float = 1.0) -> list[float]:
    """The rate before step 1 and after each of ``iters`` steps."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = build_schedule(ScheduleSpec(**spec), opt, iters)
    out = [lr_now(sched)]
    for _ in range(iters):
        opt.step()
        sched.step()
        out.append(lr_now(sched))
    assert out[-1] == opt.param_groups[0]["lr"]
    return out


# ------------------------------------------------------------------------------------------ the shapes
def test_constant_multistep_and_cosine() -> None:
    assert _rates({"type": "constant"}, 4, lr=0.3) == [0.3] * 5
    assert _rates({"type": "multistep", "milestones": [2, 3], "gamma": 0.5}, 4) == [1, 1, 0.5, 0.25, 0.25]
    iters, eta = 8, 0.01
    cos = _rates({"type": "cosine", "eta_min": eta}, iters)
    want = [eta + (1 - eta) * (1 + math.cos(math.pi * t / iters)) / 2 for t in range(iters + 1)]
    assert cos == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert cos[-1] == pytest.approx(eta)


def test_describe_is_the_row_spelling() -> None:
    assert describe(ScheduleSpec()) == "constant()"
    assert (
        describe(ScheduleSpec(type="multistep", milestones=[5, 9]))
        == "multistep(gamma=0.5, milestones=[5, 9])"
    )
    assert describe(ScheduleSpec(type="cosine")) == "cosine(eta_min=1e-07)"


def test_bad_milestones_are_refused() -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        build_schedule(ScheduleSpec(type="multistep", milestones=[3, 2]), opt, 10)
    late = {"type": "multistep", "milestones": [4]}
    with pytest.raises(ValueError, match=r"sr.pretrain.schedule: milestones \[4\] must be < iters \(4\)"):
        sr = {"mix_prob": 0, "pretrain": {"iters": 4, "schedule": late}}
        validate_config({"name": "x", "data": {"train_hr": "hr", "scale": 4}, "sr": sr})


# ------------------------------------------------------------------------------------- in the trainer
def _config(root: Path, phase: str, n: int, schedule: dict[str, Any]) -> Any:
    raw = resume_config(root, phase, n).model_dump(mode="json")
    raw["sr"][phase]["schedule"] = schedule
    raw["resources"].update(amp=False, channels_last=False)
    return validate_config(raw)


def _straight_and_resumed(cfg: Any, root: Path, phase: str, n: int) -> list[dict[str, Any]]:
    """Train 2n steps straight, and again crashing after the checkpoint at n and resuming in-process;
    the final states must be identical. Returns the straight run's reports."""
    straight = LocalContext(root / "straight")
    train_sr(cfg, straight, phase)
    broken = CrashAfterCheckpoint(root / "resumed")
    broken.crash_at = n
    with pytest.raises(_Crash):
        train_sr(cfg, broken, phase)
    resumed = LocalContext(root / "resumed")
    train_sr(cfg, resumed, phase)
    assert resumed.reports[0]["step"] == n + 1
    a, b = load_state(root / "straight" / "final"), load_state(root / "resumed" / "final")
    for key in ("nets", "optimizers", "schedulers", "ranks"):
        _assert_identical(a[key], b[key], key)
    assert [r["lr"] for r in resumed.reports] == [r["lr"] for r in straight.reports[n:]]
    return straight.reports


def test_pretraining_resumes_in_the_middle_of_a_cosine(tmp_path: Path) -> None:
    n = 3
    make_images(tmp_path)
    cfg = _config(tmp_path, "pretrain", n, {"type": "cosine", "eta_min": 1e-5})
    reports = _straight_and_resumed(cfg, tmp_path, "pretrain", n)
    lr0, iters = 1e-3, 2 * n
    want = [1e-5 + (lr0 - 1e-5) * (1 + math.cos(math.pi * t / iters)) / 2 for t in range(1, iters + 1)]
    assert [r["lr"] for r in reports] == pytest.approx(want, rel=1e-9)  # eval_every 1: a report per step
    assert {r["setting/lr_schedule"] for r in reports} == {"cosine(eta_min=1e-05)"}
    assert load_state(tmp_path / "straight" / "final")["optimizers"]["G"]["param_groups"][0]["lr"] == 1e-5


def test_the_gan_phase_resumes_across_a_milestone_and_schedules_g_and_d(tmp_path: Path) -> None:
    n = 3
    make_images(tmp_path)
    cfg = _config(tmp_path, "gan", n, {"type": "multistep", "milestones": [2, 4], "gamma": 0.1})
    reports = _straight_and_resumed(cfg, tmp_path, "gan", n)  # crashes at 3: one milestone each side
    assert [r["lr"] for r in reports] == pytest.approx([1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-5], rel=1e-9)
    state = load_state(tmp_path / "straight" / "final")
    assert set(state["schedulers"]) == {"G", "D"}
    assert {k: o["param_groups"][0]["lr"] for k, o in state["optimizers"].items()} == pytest.approx(
        {"G": 1e-5, "D": 1e-5}, rel=1e-9
    )
    assert reports[0]["setting/lr_schedule"] == "multistep(gamma=0.1, milestones=[2, 4])"


def test_data_wait_is_reported_per_step_when_the_sampler_measures_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``time/data_s``: the sampler's wait since the last report over the steps since then."""
    calls: list[int] = []

    def pop_wait_s(self: Any) -> float:
        calls.append(1)
        return 0.6

    monkeypatch.setattr(sampling.IterationSampler, "pop_wait_s", pop_wait_s, raising=False)
    make_images(tmp_path)
    raw = resume_config(tmp_path, "pretrain", 2).model_dump(mode="json")
    raw["sr"].update(eval_every=3, checkpoint_every=1000)
    raw["sr"]["pretrain"]["iters"] = 5
    raw["resources"].update(amp=False, channels_last=False)
    ctx = LocalContext(tmp_path / "run")
    train_sr(validate_config(raw), ctx, "pretrain")
    assert [r["step"] for r in ctx.reports] == [3, 5]
    assert [r["time/data_s"] for r in ctx.reports] == pytest.approx([0.2, 0.3])
    assert len(calls) == 2
