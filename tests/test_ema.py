"""Spec of the generator EMA (``sr.ema``, :mod:`csrgan.train.ema`).

* After ``k`` updates ``θ_ema = d^k θ_0 + Σ_i (1 - d) d^(k-i) θ_i`` (parameters), buffers are copies,
  ``θ_0`` is the phase's initial generator (after ``init_from``), ``θ_i`` G after its i-th step.
* The EMA is ``nets["G_ema"]``: a plain module (never trained, always in eval mode) in every
  checkpoint; it is what ``final/`` exports and what the evaluation rows measure.
* A run with an EMA resumes bit for bit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from test_train_resume import CrashAfterCheckpoint, _assert_identical, _Crash
from test_train_srgan import make_images, tiny_config, with_test_set
from torch import nn

from csrgan.config import ExperimentConfig, validate_config
from csrgan.models.artifacts import load_generator, read_generator
from csrgan.models.srgan import SRResNet
from csrgan.train.checkpoint import load_state
from csrgan.train.context import LocalContext, unwrap
from csrgan.train.ema import ModelEMA
from csrgan.train.srgan import SRStep, train_sr

DECAY = 0.6  # far from 1, so that every step's weight is visible in a few steps


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_images(tmp_path_factory.mktemp("emadata"))


def ema_config(dirs: dict[str, Path], **sr: Any) -> ExperimentConfig:
    raw = tiny_config(dirs, ema={"decay": DECAY}, **sr).model_dump(mode="json")
    raw["resources"].update(amp=False, channels_last=False)
    return validate_config(raw)


def _hand_ema(thetas: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """``d^k θ_0 + Σ_{i=1..k} (1 - d) d^(k-i) θ_i`` in float64, from the recorded ``θ_0 .. θ_k``."""
    k = len(thetas) - 1
    out = {n: decay**k * t.double() for n, t in thetas[0].items()}
    for i in range(1, k + 1):
        for n in out:
            out[n] += (1 - decay) * decay ** (k - i) * thetas[i][n].double()
    return out


# ------------------------------------------------------------------------------------------ the class
def test_model_ema_is_the_running_average_and_copies_buffers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEMA(net, 0.9)
    assert unwrap(ema) is ema.module  # like a DDP wrapper: the loop saves unwrap(net).state_dict()
    assert set(unwrap(ema).state_dict()) == set(net.state_dict())
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.module.training
    thetas = [{n: p.detach().clone() for n, p in net.named_parameters()}]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(4):
        opt.zero_grad()
        net(torch.rand(2, 3, 6, 6)).square().mean().backward()
        opt.step()
        ema.update(net)
        thetas.append({n: p.detach().clone() for n, p in net.named_parameters()})
    want = _hand_ema(thetas, 0.9)
    for n, p in ema.module.named_parameters():
        assert torch.allclose(p.double(), want[n], atol=1e-6), n
    assert not torch.allclose(ema.module[0].weight, thetas[-1]["0.weight"])  # the average, not the last
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)  # buffers: copied
    assert int(ema.module[1].num_batches_tracked) == 4
    ema.train()
    assert not ema.training and not ema.module.training  # whatever the loop asks
    with pytest.raises(ValueError, match=r"sr.ema.decay must be in \(0, 1\)"):
        ModelEMA(net, 1.0)


# --------------------------------------------------------------------------------------- in training
def _record_g(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """G's parameters before the first step and after every step (SRStep.__call__ is one iteration)."""
    seen: list[dict[str, torch.Tensor]] = []
    original = SRStep.__call__

    def spy(self: SRStep, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        if not seen:
            seen.append({n: p.detach().clone() for n, p in self.G.named_parameters()})
        out = original(self, lr, hr)
        seen.append({n: p.detach().clone() for n, p in self.G.named_parameters()})
        return out

    monkeypatch.setattr(SRStep, "__call__", spy)
    return seen


def test_the_gan_phase_ema_starts_at_init_from_and_averages_every_step(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = ema_config(dirs, pretrain={"iters": 3}, gan={"iters": 5, "lr": 1e-2, "pixel_weight": 0.5})
    train_sr(cfg, LocalContext(tmp_path / "pre"), "pretrain")
    pre = load_state(tmp_path / "pre" / "final")
    exported, _ = read_generator(tmp_path / "pre" / "final")  # final/generator.pt: the pretrain's EMA
    _assert_identical(exported, pre["nets"]["G_ema"], "pretrain final/ is its EMA")
    assert any(not torch.equal(exported[k], pre["nets"]["G"][k]) for k in exported)

    thetas = _record_g(monkeypatch)
    train_sr(cfg, LocalContext(tmp_path / "gan"), "gan", init_from=tmp_path / "pre" / "final")
    assert len(thetas) == 6
    assert all(torch.equal(thetas[0][n], exported[n]) for n in thetas[0])  # θ_0: the init_from weights
    state = load_state(tmp_path / "gan" / "final")
    ema, g = state["nets"]["G_ema"], state["nets"]["G"]
    want = _hand_ema(thetas, DECAY)
    for n in want:
        assert torch.allclose(ema[n].double(), want[n], atol=1e-6), n
    assert all(torch.equal(thetas[-1][n], g[n]) for n in thetas[-1])  # the raw G is kept too
    buffers = [k for k in g if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert buffers and all(torch.equal(ema[k], g[k]) for k in buffers)
    assert set(state["optimizers"]) == {"G", "D"}  # the EMA has no optimiser


def test_final_exports_and_evaluations_use_the_ema(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csrgan.evaluation

    evaluated: list[tuple[bool, dict[str, torch.Tensor]]] = []
    original = csrgan.evaluation.evaluate_sr_model

    def spy(model: nn.Module, *args: Any, **kwargs: Any) -> dict[str, float]:
        evaluated.append((model.training, {k: v.clone() for k, v in model.state_dict().items()}))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(csrgan.evaluation, "evaluate_sr_model", spy)
    cfg = with_test_set(ema_config(dirs, pretrain={"iters": 4}, eval_every=2), dirs)
    ctx = LocalContext(tmp_path)
    train_sr(cfg, ctx, "pretrain")
    state = load_state(tmp_path / "final")
    assert state["export"]["net"] == "G_ema"
    assert [("val/psnr" in r) for r in ctx.reports] == [True, True] and len(evaluated) == 2
    training, weights = evaluated[-1]
    assert not training
    _assert_identical(weights, state["nets"]["G_ema"], "the last evaluation ran the EMA")
    assert any(not torch.equal(weights[k], state["nets"]["G"][k]) for k in weights)
    g = load_generator(tmp_path / "final", "sr")
    assert isinstance(g, SRResNet)
    _assert_identical(g.state_dict(), state["nets"]["G_ema"], "final/generator.pt")
    assert {r["setting/ema_decay"] for r in ctx.reports} == {DECAY}
    # csrgan export / upscale: the EMA by default, the raw G when asked (and the file says which)
    from csrgan.export import export_metadata, load_export_source

    ema_src = load_export_source(tmp_path / "final")
    raw_src = load_export_source(tmp_path / "final", ema=False)
    _assert_identical(ema_src.model.state_dict(), state["nets"]["G_ema"], "export: EMA by default")
    _assert_identical(raw_src.model.state_dict(), state["nets"]["G"], "export --no-ema: the raw G")
    assert export_metadata(ema_src)["weights"] == "ema" and export_metadata(raw_src)["weights"] == "raw"
    assert raw_src.weights_entry == "nets/G"
    # and without sr.ema: no G_ema, G is exported, the rows say so
    raw = cfg.model_dump(mode="json")
    raw["sr"]["ema"] = None
    ctx = LocalContext(tmp_path / "plain")
    train_sr(validate_config(raw), ctx, "pretrain")
    plain = load_state(tmp_path / "plain" / "final")
    assert set(plain["nets"]) == {"G"} and plain["export"]["net"] == "G"
    assert {r["setting/ema_decay"] for r in ctx.reports} == {None}


@pytest.mark.parametrize("phase", ["pretrain", "gan"])
def test_a_run_with_an_ema_resumes_exactly(dirs: dict[str, Path], tmp_path: Path, phase: str) -> None:
    n = 3
    iters = {"iters": 2 * n, "lr": 1e-3}
    cfg = ema_config(
        dirs,
        pretrain=iters if phase == "pretrain" else {"iters": 0},
        gan={**iters, "pixel_weight": 0.1} if phase == "gan" else {"iters": 0},
        checkpoint_every=n,
        eval_every=1,
    )
    straight = LocalContext(tmp_path / "straight")
    train_sr(cfg, straight, phase)  # type: ignore[arg-type]
    broken = CrashAfterCheckpoint(tmp_path / "resumed")
    broken.crash_at = n
    with pytest.raises(_Crash):
        train_sr(cfg, broken, phase)  # type: ignore[arg-type]
    resumed = LocalContext(tmp_path / "resumed")
    train_sr(cfg, resumed, phase)  # type: ignore[arg-type]
    assert resumed.reports[0]["step"] == n + 1
    a, b = load_state(tmp_path / "straight" / "final"), load_state(tmp_path / "resumed" / "final")
    assert "G_ema" in a["nets"]
    for key in ("nets", "optimizers", "schedulers", "ranks"):
        _assert_identical(a[key], b[key], key)
    ga, _ = read_generator(tmp_path / "straight" / "final")
    gb, _ = read_generator(tmp_path / "resumed" / "final")
    _assert_identical(ga, gb, "final/generator.pt")


# ---------------------------------------------------------------------------------- two DDP ranks
DDP_EMA_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from csrgan.config import validate_config
    from csrgan.train import ema as ema_module
    from csrgan.train.context import LocalContext, unwrap
    from csrgan.train.srgan import train_sr

    rank, port, cfg_file, out = sys.argv[1:5]
    rank = int(rank)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    seen, emas = [], []
    original = ema_module.ModelEMA.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        emas.append(self)

    ema_module.ModelEMA.__init__ = spy

    class DDPContext(LocalContext):
        def prepare_model(self, model):  # what RayTrainContext does (csrgan.train.ray_train.ddp_kwargs)
            seen.append(model)
            return DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=True)

    ctx = DDPContext(Path(out) / f"rank{rank}")
    ctx.rank, ctx.world_size = rank, 2
    train_sr(validate_config(json.loads(Path(cfg_file).read_text())), ctx, "gan")
    torch.save({"G": unwrap(seen[0]).state_dict(), "G_ema": unwrap(emas[0]).state_dict()},
               Path(out) / f"rank{rank}_nets.pt")
    """
)


@pytest.mark.slow
def test_two_ddp_ranks_keep_identical_emas_with_ragan(dirs: dict[str, Path], tmp_path: Path) -> None:
    """gloo on loopback: ESRGAN's ragan step (real and fake backpropagated separately) runs under DDP,
    and each rank's EMA, updated from its unwrapped G, has the same parameters as the other's."""
    from test_train_resume import REPO, _free_port, _params

    cfg = ema_config(dirs, gan={"iters": 3, "lr": 1e-2, "gan_mode": "ragan", "pixel_weight": 0.1})
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json())
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DDP_EMA_SCRIPT, str(r), port, str(cfg_file), str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
    nets = [torch.load(tmp_path / f"rank{r}_nets.pt", weights_only=True) for r in range(2)]
    _assert_identical(_params(nets[0]), _params(nets[1]), "rank0 vs rank1 parameters")
    ema, g = nets[0]["G_ema"], nets[0]["G"]
    assert any(not torch.equal(ema[k], g[k]) for k in _params(nets[0])["G"])
    state = load_state(tmp_path / "rank0" / "final")
    _assert_identical(state["nets"]["G_ema"], ema, "rank 0's EMA is the checkpointed one")
