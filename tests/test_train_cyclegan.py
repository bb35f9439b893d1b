"""Spec of the CycleGAN trainer (``csrgan.train.cyclegan``): stage 1, ``G: X (bicubic LR) -> Y (real LR)``.

Tiny networks (ngf 8, one residual block, 2-layer PatchGAN) on 24 px LR patches. X is MATLAB bicubic of
small scikit-image HR crops; Y is the same kind of crops degraded with csrgan's default synthetic
"real-world" pipeline (blur, x4 down, noise, JPEG), so the two domains really differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch

from csrgan.config import ExperimentConfig, validate_config
from csrgan.data.degradations import default_pipeline
from csrgan.data.io import read_image, write_image
from csrgan.metrics import PROTOCOL
from csrgan.models.artifacts import GeneratorSpec, load_generator, read_generator, save_generator
from csrgan.models.cyclegan import ResnetGenerator
from csrgan.train.checkpoint import CHECKPOINT_FORMAT, STATE_FILE, CheckpointMismatchError, load_state
from csrgan.train.context import LocalContext
from csrgan.train.cyclegan import LOSS_KEYS, LinearDecay, generator_spec, train_cyclegan
from csrgan.train.keys import cyclegan_key
from csrgan.train.launch import final_of

REPO = Path(__file__).resolve().parents[1]
# junyanz's networks (the defaults are the frequency-separation learner's residual G and DSGAN critic)
TINY_GENERATOR = {"type": "resnet", "ngf": 8, "n_blocks": 1}
TINY_DISCRIMINATOR = {"type": "patchgan", "ndf": 8, "n_layers": 2}
SCALE = 4


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny convs gain nothing from threads, and on a shared 2-core box OpenMP spin-waiting makes them
    5x slower; the subprocesses below get the same count (CPU results may depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """hr/ (4 x 128 px), real/ (4 x 32 px real-like LR of *other* crops), a 'real' test set (2 x 64 px HR)."""
    root = tmp_path_factory.mktemp("cyclegan_data")
    pipe = default_pipeline()
    rng = np.random.default_rng(0)
    for k, img in enumerate(
        [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    ):
        write_image(root / "hr" / f"{k}.png", img[:128, :128])
        write_image(root / "real" / f"{k}.png", pipe(img[-128:, -128:], rng)[0])  # unpaired with hr/
        if k < 2:
            test_hr = img[200:264, 200:264]
            write_image(root / "test_hr" / f"t{k}.png", test_hr)
            write_image(root / "test_lr" / f"t{k}.png", pipe(test_hr, rng)[0])
    return {name: root / name for name in ("hr", "real", "test_hr", "test_lr")}


def make_cfg(folders: Mapping[str, Path], test_sets: bool = False, **cyclegan: Any) -> ExperimentConfig:
    sets = (
        [
            {
                "name": "realset",
                "hr": str(folders["test_hr"]),
                "lr": str(folders["test_lr"]),
                "degradation": "real",
            }
        ]
        if test_sets
        else []
    )
    cg = {
        "learner": "cyclegan",
        "generator": TINY_GENERATOR,
        "discriminator": TINY_DISCRIMINATOR,
        "patch_size": 24,
        "batch_size": 2,
        "pool_size": 4,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        **cyclegan,
    }
    return validate_config(
        {
            "name": "cg-test",
            "seed": 3,
            "data": {
                "train_hr": str(folders["hr"]),
                "real_lr": str(folders["real"]),
                "scale": SCALE,
                "test_sets": sets,
            },
            "cyclegan": cg,
            "eval": {"grid_images": 1},
        }
    )


@pytest.fixture(scope="module")
def short_run(
    folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentConfig, LocalContext, dict[str, Any]]:
    """40 iterations, a report (with evaluation) after every one; default decay_start = iters // 2."""
    cfg = make_cfg(folders, test_sets=True, iters=40, eval_every=1, checkpoint_every=20)
    ctx = LocalContext(tmp_path_factory.mktemp("short_run"))
    return cfg, ctx, train_cyclegan(cfg, ctx)


def _assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Recursive bit-for-bit equality of nested checkpoint states."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _untimed(state: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint state without the wall-clock timing in its stored report (``time/step_s``), the one
    value two identical runs legitimately disagree on."""
    metrics = {k: v for k, v in state["metrics"].items() if not k.startswith("time/")}
    return {**state, "metrics": metrics}


# ----------------------------------------------------------------------------------------- training
def test_cycle_loss_decreases_over_a_short_run(short_run) -> None:
    _, ctx, _ = short_run
    cycle = [r["loss/cycle"] for r in ctx.reports]
    assert len(cycle) == 40
    assert np.mean(cycle[-10:]) < np.mean(cycle[:10])


def test_every_report_carries_step_phase_losses_protocol_and_weights(short_run) -> None:
    _, ctx, result = short_run
    steps = [r["step"] for r in ctx.reports]
    assert steps == list(range(1, 41))
    epochs = [r["epoch"] for r in ctx.reports]
    assert epochs == sorted(epochs) and epochs[-1] == pytest.approx(40 * 2 / 4)  # batch 2, 4 HR images
    for r in ctx.reports:
        assert r["phase"] == "cyclegan" and r["diverged"] == 0
        assert r["protocol"] == PROTOCOL.id and "none" in r["weights"]
        assert all(np.isfinite(r[k]) for k in LOSS_KEYS)
        # the reported total is the sum of the weighted terms it is made of
        assert r["loss/g"] == pytest.approx(r["loss/cycle"] + r["loss/idt"] + r["loss/g_gan"], rel=1e-5)
    # the result is the last report; the artefact is the stage folder's final/
    assert result == {k: v for k, v in ctx.reports[-1].items() if k not in ("wall_s", "checkpoint")}
    assert result["step"] == 40 and final_of(ctx.out_dir) == ctx.out_dir / "final"


def test_evaluation_reports_table2_numbers_for_real_sets_and_writes_a_grid(short_run) -> None:
    _, ctx, _ = short_run
    last = ctx.reports[-1]
    for key in ("realset/g_psnr", "realset/g_ssim", "realset/bicubic_psnr", "realset/bicubic_ssim"):
        assert np.isfinite(last[key]), key
    # the bicubic baseline does not depend on G: identical at every evaluation
    assert len({r["realset/bicubic_psnr"] for r in ctx.reports}) == 1
    assert len({r["realset/g_psnr"] for r in ctx.reports}) > 1
    grid = read_image(ctx.out_dir / "grids" / "cyclegan_realset_step40.png")
    assert grid.shape[1] > 3 * 128 and 128 < grid.shape[0] < 3 * 128  # one labelled row: x | G(x) | y, 128 px


def test_checkpoints_hold_the_full_state_and_load_weights_only(short_run) -> None:
    cfg, ctx, _ = short_run
    ckpt = ctx.latest_checkpoint()
    assert ckpt is not None and ckpt.name == "step_00000040"
    assert [r.get("checkpoint") is not None for r in ctx.reports].count(True) == 2  # steps 20 and 40
    assert ctx.reports[-1]["checkpoint"] == str(ctx.checkpoint_root / "step_00000040")  # never final/
    state = torch.load(ckpt / STATE_FILE, weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["stage"] == "cyclegan"
    assert state["key"] == cyclegan_key(cfg) and state["world_size"] == 1
    # stateless sampling: the step is the whole data position
    assert state["step"] == 40 and state["metrics"]["step"] == 40
    assert set(state["nets"]) == {"G_A", "G_B", "D_A", "D_B"}
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"G", "D"}
    (rank0,) = state["ranks"]
    assert set(rank0["rng"]) >= {"python", "numpy", "torch"}
    assert {k: len(p["images"]) for k, p in rank0["pools"].items()} == {"fake_Y": 4, "fake_X": 4}
    assert state["export"]["net"] == "G_A" and state["export"]["spec"]["role"] == "degradation"
    # final/ is a complete checkpoint too
    _assert_same(load_state(ctx.out_dir / "final"), state, "final/ vs step_00000040")


# ---------------------------------------------------------------------------------------- LR schedule
def test_linear_decay_is_constant_then_reaches_zero_at_iters() -> None:
    decay = LinearDecay(iters=10, decay_start=4)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    expected = [2e-4] * 5 + [2e-4 * (10 - s) / 6 for s in range(5, 11)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert lrs[-1] == 0.0
    assert LinearDecay(iters=5, decay_start=5)(4) == 1.0 and LinearDecay(iters=5, decay_start=5)(5) == 0.0
    with pytest.raises(ValueError, match="decay_start"):
        LinearDecay(iters=5, decay_start=6)


def test_training_uses_the_schedule_with_default_decay_start_half_of_iters(short_run) -> None:
    cfg, ctx, _ = short_run
    assert cfg.cyclegan.decay_start is None
    # "lr" in the report at step s is the rate of the next update, lr * factor(s)
    got = [r["lr"] for r in ctx.reports]
    expected = [2e-4 if s < 20 else 2e-4 * (40 - s) / 20 for s in range(1, 41)]
    assert got == pytest.approx(expected, abs=1e-12)
    state = load_state(ctx.latest_checkpoint())
    assert state["schedulers"]["G"]["lr_lambdas"] == [{"iters": 40, "decay_start": 20}]


# ------------------------------------------------------------------------------------- exact resume
class Preempted(RuntimeError):
    pass


class PreemptedAfter(LocalContext):
    """Persists the checkpoint of step ``stop``, then dies like a pre-empted worker."""

    def __init__(self, out_dir: Path, stop: int) -> None:
        super().__init__(out_dir)
        self.stop = stop

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        if metrics["step"] == self.stop:
            raise Preempted(f"pre-empted after step {self.stop}")


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from csrgan.config import validate_config
    from csrgan.train.context import LocalContext
    from csrgan.train.cyclegan import train_cyclegan

    cfg_file, out, threads = sys.argv[1:]
    torch.set_num_threads(int(threads))
    cfg = validate_config(json.loads(open(cfg_file).read()), source=cfg_file)
    ctx = LocalContext(out)
    train_cyclegan(cfg, ctx)
    print(json.dumps([r["step"] for r in ctx.reports]))
    """
)


def test_resume_in_a_fresh_process_continues_bit_for_bit(folders, tmp_path: Path) -> None:
    n = 3
    # decay_start inside the run and a pool that fills up and starts swapping before step n
    cfg = make_cfg(folders, iters=2 * n, checkpoint_every=n, decay_start=2, pool_size=3)
    straight = LocalContext(tmp_path / "straight")
    train_cyclegan(cfg, straight)

    out = tmp_path / "interrupted"
    with pytest.raises(Preempted):
        train_cyclegan(cfg, PreemptedAfter(out, stop=n))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000003"]
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(cfg_file), str(out), str(torch.get_num_threads())],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [2 * n]  # resumed at n, not from scratch

    a = load_state(straight.checkpoint_root / "step_00000006")
    b = load_state(out / "checkpoints" / "step_00000006")
    for net in ("G_A", "G_B", "D_A", "D_B"):
        _assert_same(a["nets"][net], b["nets"][net], net)
    _assert_same(a["ranks"][0]["pools"], b["ranks"][0]["pools"], "pools")
    assert len(a["ranks"][0]["pools"]["fake_Y"]["images"]) == 3
    _assert_same(_untimed(a), _untimed(b))  # and everything else: optimisers, schedulers, RNG states, step
    g_a = torch.load(straight.out_dir / "final" / "generator.pt", weights_only=True)
    g_b = torch.load(out / "final" / "generator.pt", weights_only=True)
    _assert_same(g_a, g_b, "final generator")


def test_a_checkpoint_of_another_config_is_refused_by_name(folders, short_run, tmp_path: Path) -> None:
    _, ctx, _ = short_run
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    src = ctx.latest_checkpoint()
    (other / "checkpoints" / src.name).mkdir()
    (other / "checkpoints" / src.name / STATE_FILE).write_bytes((src / STATE_FILE).read_bytes())
    cfg = make_cfg(folders, test_sets=True, iters=40, lambda_cycle=5.0)
    with pytest.raises(CheckpointMismatchError, match=r"step_00000040/state\.pt.*different cyclegan"):
        train_cyclegan(cfg, LocalContext(other))


def test_resuming_a_finished_run_reports_once_more_without_training(folders, short_run, tmp_path) -> None:
    cfg, ctx, _ = short_run
    copy = LocalContext(tmp_path / "again")
    src = ctx.latest_checkpoint()
    (copy.checkpoint_root / src.name).mkdir(parents=True)
    (copy.checkpoint_root / src.name / STATE_FILE).write_bytes((src / STATE_FILE).read_bytes())
    result = train_cyclegan(cfg, copy)
    # the stored final report, once, without a checkpoint (and without evaluating again)
    assert [r["step"] for r in copy.reports] == [40] and "checkpoint" not in copy.reports[0]
    stored = load_state(src)["metrics"]
    assert result == stored and result["realset/g_psnr"] == ctx.reports[-1]["realset/g_psnr"]
    assert not (copy.out_dir / "grids").exists()
    assert (copy.out_dir / "final" / "generator.pt").is_file()


# ------------------------------------------------------------------------------------------ artefact
def test_final_generator_round_trips_and_keeps_the_input_size(short_run) -> None:
    cfg, ctx, _ = short_run
    final = ctx.out_dir / "final"
    conf = json.loads((final / "generator.json").read_text())
    assert (conf["format"], conf["role"], conf["type"]) == ("csrgan.generator/v2", "degradation", "resnet")
    assert (conf["args"]["ngf"], conf["args"]["n_blocks"], conf["scale"], conf["meta"]["step"]) == (
        8,
        1,
        SCALE,
        40,
    )
    assert conf["meta"]["stage"] == "cyclegan" and conf["meta"]["key"] == cyclegan_key(cfg)
    assert read_generator(final)[1].to_json() == conf
    assert conf == generator_spec(cfg, **conf["meta"]).to_json()  # what the config says, nothing else

    trained = ResnetGenerator(ngf=8, n_blocks=1)
    trained.load_state_dict(load_state(ctx.latest_checkpoint())["nets"]["G_A"])
    trained.eval()
    x = torch.rand(2, 3, 27, 35, generator=torch.Generator().manual_seed(0))  # odd, not a multiple of 4
    with torch.no_grad():
        want = trained(x)
    for source in (final, final / "generator.pt", ctx.latest_checkpoint()):
        G = load_generator(source, "degradation", "cpu", scale=SCALE)
        assert not G.training and not any(p.requires_grad for p in G.parameters())
        with torch.no_grad():
            got = G(x)
        assert got.shape == x.shape
        assert torch.equal(got, want), source
    assert not torch.allclose(want, x, atol=1e-2)  # G is a real mapping, not a pass-through


def test_save_and_load_generator_directly(folders, tmp_path: Path) -> None:
    cfg = make_cfg(folders)
    G = ResnetGenerator(ngf=8, n_blocks=1).eval()
    spec = generator_spec(cfg)
    assert (spec.role, spec.type, spec.scale) == ("degradation", "resnet", SCALE)
    assert spec.args == {"ngf": 8, "n_blocks": 1, "n_down": 2, "norm": "instance", "use_dropout": False}
    save_generator(tmp_path / "g", G, spec)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(load_generator(tmp_path / "g", "degradation")(x), G(x))


def test_generator_errors_name_the_file(folders, short_run, tmp_path: Path) -> None:
    cfg, ctx, _ = short_run
    final = ctx.out_dir / "final"
    with pytest.raises(ValueError, match=re.escape(str(final)) + r".*trained for x4, not x2"):
        load_generator(final, "degradation", scale=2)
    with pytest.raises(
        ValueError, match=re.escape(str(final)) + r": holds a degradation generator.*SR generator"
    ):
        load_generator(final, "sr")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_generator(tmp_path / "nowhere", "degradation")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "generator.pt").write_bytes((final / "generator.pt").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lonely/generator\.json is missing"):
        load_generator(lonely, "degradation")
    spec = generator_spec(make_cfg(folders))
    wrong: GeneratorSpec = dataclasses.replace(spec, args={**spec.args, "ngf": 16})
    with pytest.raises(ValueError, match="do not fit"):  # weights vs stated architecture: nothing written
        save_generator(tmp_path / "bad", ResnetGenerator(ngf=8, n_blocks=1), wrong)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------ divergence
def test_a_diverging_run_stops_cleanly_and_reports_diverged(folders, tmp_path: Path) -> None:
    cfg = make_cfg(folders, iters=20, lr=1e30, checkpoint_every=1)  # Adam steps of ~1e30: overflow
    ctx = LocalContext(tmp_path / "run")
    result = train_cyclegan(cfg, ctx)
    assert result["diverged"] == 1 and result["step"] < 20
    last = ctx.reports[-1]
    assert last["diverged"] == 1 and last["step"] == result["step"] and "checkpoint" not in last
    assert all(r["diverged"] == 0 for r in ctx.reports[:-1])
    # no checkpoint of the broken state, no final artefact
    assert ctx.latest_checkpoint().name == f"step_{result['step'] - 1:08d}"
    assert not (ctx.out_dir / "final").exists()


def test_amp_on_cpu_when_asked_trains_with_bf16_autocast(folders, tmp_path: Path) -> None:
    cfg = make_cfg(folders, iters=2)
    cfg = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"amp": True})})
    ctx = LocalContext(tmp_path)
    result = train_cyclegan(cfg, ctx)  # explicit amp: honoured on CPU too (slower there)
    assert result["diverged"] == 0 and result["step"] == 2
    # channels_last stays auto: off for the degradation learners on CPU (csrgan.train.efficiency)
    assert [(r["setting/amp"], r["setting/channels_last"]) for r in ctx.reports] == [(True, False)]


# --------------------------------------------------------------------------------------------- DDP
DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from csrgan.config import validate_config
    from csrgan.train.context import LocalContext, unwrap
    from csrgan.train.cyclegan import train_cyclegan
    from csrgan.train.ray_train import ddp_kwargs

    cfg_file, out = sys.argv[1:]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)

    class DDPContext(LocalContext):
        def __init__(self, out_dir, rank, world_size):
            super().__init__(out_dir)
            self.rank, self.world_size = rank, world_size

        def prepare_model(self, model):
            self.nets = getattr(self, "nets", []) + [model]
            return DDP(model.to(self.device), **ddp_kwargs())

        def report(self, metrics, checkpoint_dir=None):
            if self.rank == 0:
                return super().report(metrics, checkpoint_dir)
            assert checkpoint_dir is None
            self.reports.append(dict(metrics))

    cfg = validate_config(json.loads(open(cfg_file).read()), source=cfg_file)
    ctx = DDPContext(Path(out), rank=rank, world_size=world)
    train_cyclegan(cfg, ctx)
    torch.save({"reports": [r["step"] for r in ctx.reports],
                "keys": sorted({k for r in ctx.reports for k in r}),
                "losses": [[r[k] for k in sorted(r) if k.startswith("loss/")] for r in ctx.reports],
                "G_A": ctx.nets[0].state_dict()}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()
    """
)


def _run_ddp(cfg_file: Path, out: Path, tmp_path: Path, port: int) -> None:
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(cfg_file), str(out)],
            cwd=REPO,
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for r, p in enumerate(procs):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"rank {r}: {err[-3000:]}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ddp_workers_stay_in_sync_and_resume_bit_for_bit(folders, tmp_path: Path) -> None:
    """Two gloo ranks (each of the 4 nets in its own DDP wrapper, Ray's DDP options): same reports on
    every rank, identical weights, per-rank pools in the checkpoint, and an exact two-rank resume."""
    cfg = make_cfg(folders, test_sets=True, iters=4, checkpoint_every=2, eval_every=2, batch_size=1)
    cfg = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"workers": 2})})
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json())
    straight = tmp_path / "straight"
    _run_ddp(cfg_file, straight, tmp_path, _free_port())

    r0, r1 = (torch.load(straight / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["reports"] == r1["reports"] == [2, 4]
    assert "realset/g_psnr" in r0["keys"] and "realset/g_psnr" not in r1["keys"]  # evaluation on rank 0
    _assert_same(r0["G_A"], r1["G_A"], "G_A across ranks")
    assert r0["losses"] == r1["losses"]  # reported losses are the mean over ranks, the same on every rank
    state = load_state(straight / "checkpoints" / "step_00000004")
    pools = [rk["pools"]["fake_Y"] for rk in state["ranks"]]
    assert len(pools) == 2 and not torch.equal(pools[0]["images"][0], pools[1]["images"][0])

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints" / "step_00000002").mkdir(parents=True)
    src = straight / "checkpoints" / "step_00000002" / STATE_FILE
    (resumed / "checkpoints" / "step_00000002" / STATE_FILE).write_bytes(src.read_bytes())
    _run_ddp(cfg_file, resumed, tmp_path, _free_port())
    _assert_same(_untimed(state), _untimed(load_state(resumed / "checkpoints" / "step_00000004")))
