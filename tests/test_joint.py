"""Spec of joint training (csrgan.train.joint, ``sr.joint``): the degradation G trains with the SR network.

* The joint samples are the two-stage SR samples (same crops, flips and coins), with context for G.
* A frozen G (``sr.joint.lr: 0``) gives the SR network the LR the two-stage cache holds, and with
  ``sr_weight: 0`` too the whole SR run is the two-stage run, bit for bit (identity G).
* ``lr > 0`` trains G and its critic; ``lr: 0`` leaves both exactly as the stage made them.
* The SR gradient reaches G scaled by ``sr_weight`` (0: none), and it is the true gradient of the SR
  loss through ``lr = G(x)``.
* Exact resume covers both networks; the phase exports the SR G and ``final/degradation/``.
* The stage table dispatches joint phases; the unsupported learner and LR sources are refused.

Tiny everything, from tests/test_degradation_stage.py: 4 HR images (LR 17 x 16), 8 px LR patches for
the stage, SR on 32 px HR patches (LR 8), a residual G with 1 block (receptive radius 4).
"""

# ruff: noqa: F811 - ``data`` is tests/test_degradation_stage.py's fixture, imported, then requested by name

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_degradation_stage import FROZEN_G, SCALE, data, make_cfg  # noqa: F401 - data is a fixture
from test_train_resume import CrashAfterCheckpoint, _assert_identical, _Crash

from csrgan.config import ConfigError, ExperimentConfig
from csrgan.data.datasets import PairedPatchDataset, _augment, list_images
from csrgan.data.io import read_image, to_tensor
from csrgan.models.artifacts import load_generator, read_generator
from csrgan.train.checkpoint import load_state
from csrgan.train.context import LocalContext
from csrgan.train.joint import DEGRADATION_DIR, ContextPatchDataset, JointSRLoop, dihedral, train_joint
from csrgan.train.launch import launch
from csrgan.train.srgan import train_sr
from csrgan.train.stages import StageError, get_stage

LP = 32 // SCALE  # the SR LR patch side
MARGIN = 4  # receptive radius of the tiny residual G (2 + 2 * 1 block)


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _stage(data: dict[str, Path], root: Path, cyclegan: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    res = launch("cyclegan", make_cfg(data, cyclegan), root / "cyclegan")
    assert res.final is not None and not res.diverged
    return cyclegan, res.final


@pytest.fixture(scope="module")
def noisy_stage(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    """The default tiny learner (G with a noise input), 2 iterations."""
    return _stage(data, tmp_path_factory.mktemp("noisy"), {"iters": 2})


@pytest.fixture(scope="module")
def plain_stage(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    """A G without noise that really changes its input (a large learning rate, 3 iterations)."""
    return _stage(
        data, tmp_path_factory.mktemp("plain"), {"iters": 3, "lr": 0.02, "generator": {"noise_channels": 0}}
    )


@pytest.fixture(scope="module")
def identity_stage(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    """G stays exactly the identity (no noise, zero-weight objective)."""
    return _stage(data, tmp_path_factory.mktemp("identity"), FROZEN_G)


def joint_cfg(
    data: dict[str, Path], cyclegan: dict[str, Any], joint: dict[str, Any] | None = None, **sr: Any
) -> ExperimentConfig:
    """``make_cfg`` with ``sr.joint`` enabled (``joint`` merged in; ``None``: disabled)."""
    sr = {"gan": {"iters": 3}, **sr}
    if joint is not None:
        sr["joint"] = {"enabled": True, **joint}
    return make_cfg(data, cyclegan, sr=sr)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------- 1. samples
class _BicubicAlt:
    """An AltLR that returns the bicubic patch: only its coin matters here."""

    id = "bicubic"

    def __init__(self, plain: PairedPatchDataset) -> None:
        self.plain = plain

    def patch(self, k: int, top: int, left: int, side: int, *rest: Any) -> np.ndarray:
        return self.plain.pair(k)[0][top : top + side, left : left + side]


@pytest.mark.parametrize("patch", [16, 32])
def test_joint_samples_are_the_two_stage_samples_with_context(data: dict[str, Path], patch: int) -> None:
    kw: dict[str, Any] = {"scale": SCALE, "patch_size": patch, "cache": True, "seed": 3}
    ds = ContextPatchDataset(data["hr"], margin=MARGIN, mix_prob=0.5, **kw)
    plain = PairedPatchDataset(data["hr"], **kw)
    mixed = PairedPatchDataset(data["hr"], alt=_BicubicAlt(plain), mix_prob=0.5, **kw)
    lp, coins, inside = patch // SCALE, [], 0
    for epoch in range(12):
        for d in (ds, plain, mixed):
            d.set_epoch(epoch)
        for i in range(len(ds)):
            item, ref = ds[i], plain[i]
            assert item["x"].shape == (3, lp + 2 * MARGIN, lp + 2 * MARGIN)
            flips = item["flips"][None]
            centre = item["x"][None, :, MARGIN : MARGIN + lp, MARGIN : MARGIN + lp]
            assert torch.equal(dihedral(centre, flips)[0], ref["lr"])  # same crop, same flips
            assert torch.equal(dihedral(item["hr"][None], flips)[0], ref["hr"])
            assert item["alt"] == mixed[i]["alt"]  # the two-stage dataset's own coin
            lr = plain.pair(i % ds.n_images)[0]
            t, left = item["top"], item["left"]
            if MARGIN <= t <= lr.shape[0] - lp - MARGIN and MARGIN <= left <= lr.shape[1] - lp - MARGIN:
                window = lr[t - MARGIN : t + lp + MARGIN, left - MARGIN : left + lp + MARGIN]
                assert torch.equal(item["x"], to_tensor(window)[0])  # the image's context, not padding
                inside += 1
            coins.append(item["alt"])
    assert 0.25 < np.mean(coins) < 0.75
    assert inside > (5 if patch == 16 else -1)


class _Flags:
    """An rng stub for csrgan.data.datasets._augment: its three draws are the given flags."""

    def __init__(self, flags: tuple[bool, bool, bool]) -> None:
        self.values = [0.0 if f else 0.9 for f in flags]

    def random(self) -> float:
        return self.values.pop(0)


@pytest.mark.parametrize("flags", [(h, v, t) for h in (0, 1) for v in (0, 1) for t in (0, 1)])
def test_dihedral_is_the_datasets_augmentation(flags: tuple[int, int, int]) -> None:
    img = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    (want,) = _augment([img], _Flags(tuple(bool(f) for f in flags)))  # type: ignore[arg-type]
    got = dihedral(to_tensor(img), torch.tensor([flags], dtype=torch.bool))
    assert torch.equal(got, to_tensor(np.ascontiguousarray(want)))


# ---------------------------------------------------------------------------- 2. frozen G = the cache
def test_a_frozen_g_gives_the_sr_network_the_cached_lr(
    plain_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    """Away from the image border, the centre of G(window) rounded to uint8 is the cached G(whole image)."""
    cg, final = plain_stage
    cfg = joint_cfg(data, cg, {"lr": 0.0, "sr_weight": 0.0}, patch_size=16)  # LR 4: room for context
    loop = JointSRLoop(cfg, LocalContext(tmp_path), "gan", cyclegan_g=final)
    stems = [p.stem for p in list_images(data["hr"])]
    lp, exact, checked, moved = 4, 0, 0, 0
    for step in range(24):
        fwd = loop.joint_batch(step)
        batch = loop.sampler.read(loop.dataset, step)
        assert fwd.mask.all()  # p = 1
        for i in range(len(fwd.lr)):
            k = int(batch["index"][i]) % loop.dataset.n_images
            t, left = int(batch["top"][i]), int(batch["left"][i])
            cached = read_image(final / "lr" / "0" / f"{stems[k]}.png")
            h, w = cached.shape[:2]
            if not (MARGIN <= t <= h - lp - MARGIN and MARGIN <= left <= w - lp - MARGIN):
                continue
            want = dihedral(to_tensor(cached[t : t + lp, left : left + lp]), batch["flips"][i : i + 1])[0]
            diff = (fwd.lr[i] - want).abs()
            assert float(diff.max()) <= 1 / 255 + 1e-6  # at most a rounding tie apart
            exact += int((diff == 0).sum())
            checked += diff.numel()
            bicubic = dihedral(
                batch["x"][i : i + 1, :, MARGIN:-MARGIN, MARGIN:-MARGIN], batch["flips"][i : i + 1]
            )
            moved += int((fwd.lr[i] != bicubic[0]).sum())
    assert checked >= 4 * 3 * lp * lp and exact >= 0.99 * checked, (exact, checked)
    assert moved > 0.2 * checked, "this G must really change its input for the test to mean anything"


def test_frozen_g_without_sr_gradient_is_the_two_stage_run_bit_for_bit(
    identity_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    """``lr: 0, sr_weight: 0`` with an identity G: the same batches, coins and SR updates as two-stage
    CSR-GAN on its cache (the joint part adds nothing random and changes nothing)."""
    cg, final = identity_stage
    sr = {"mix_prob": 0.5, "gan": {"iters": 4}, "eval_every": 1}
    two = LocalContext(tmp_path / "two_stage")
    train_sr(joint_cfg(data, cg, None, **sr), two, "gan", cyclegan_g=final)
    one = LocalContext(tmp_path / "joint")
    train_joint(joint_cfg(data, cg, {"lr": 0.0, "sr_weight": 0.0}, **sr), one, "gan", cyclegan_g=final)
    a, b = load_state(tmp_path / "two_stage" / "final"), load_state(tmp_path / "joint" / "final")
    for key in ("G", "D"):
        _assert_identical(a["nets"][key], b["nets"][key], f"nets.{key}")
        _assert_identical(a["optimizers"][key], b["optimizers"][key], f"optimizers.{key}")
    fractions = [r["mix/g_fraction"] for r in two.reports]
    assert [r["mix/g_fraction"] for r in one.reports] == fractions and 0 < np.mean(fractions) < 1
    sr_losses = [k for k in two.reports[0] if k.startswith("loss/")]
    assert [[r[k] for k in sr_losses] for r in one.reports] == [
        [r[k] for k in sr_losses] for r in two.reports
    ]
    assert _same(b["nets"]["G_deg"], load_state(final)["nets"]["G"])  # frozen: still the stage's G


# ------------------------------------------------------------------------------ 3. what G learns
def test_a_joint_gan_phase_trains_g_and_its_critic_and_exports_both(
    noisy_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    cg, final = noisy_stage
    cfg = joint_cfg(data, cg, {"lr": 1e-3, "sr_weight": 1.0}, gan={"iters": 4}, eval_every=2)
    res = launch("gan", cfg, tmp_path / "gan", {"cyclegan": final})  # through the stage table
    assert res.final is not None and not res.diverged
    rows = _rows(tmp_path / "gan")
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert r["setting/joint_sr_weight"] == 1.0 and r["mix/g_fraction"] == 1.0
        assert all(
            np.isfinite(r[f"loss/{k}"]) for k in ("g_total", "d_real", "deg_color", "deg_texture", "deg_d")
        )
    state, stage = load_state(res.final), load_state(final)
    assert set(state["nets"]) == set(state["optimizers"]) == {"G", "D", "G_deg", "D_deg"}
    assert not _same(state["nets"]["G_deg"], stage["nets"]["G"])  # G learned
    assert not _same(state["nets"]["D_deg"], stage["nets"]["D"])  # and its critic
    assert state["optimizers"]["G_deg"]["param_groups"][0]["lr"] == 1e-3
    # the SR generator is the phase's artefact; the jointly trained G sits beside it
    assert read_generator(res.final)[1].role == "sr"
    weights, spec = read_generator(res.final / DEGRADATION_DIR)
    assert spec.role == "degradation" and spec.meta["joint"] is True and spec.meta["stage"] == "gan"
    assert _same(weights, state["nets"]["G_deg"])
    G = load_generator(res.final / DEGRADATION_DIR, "degradation", scale=SCALE)
    assert G.noise_channels == 1


def test_lr_zero_leaves_g_and_its_critic_exactly_as_the_stage_made_them(
    noisy_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    cg, final = noisy_stage
    cfg = joint_cfg(data, cg, {"lr": 0.0, "sr_weight": 1.0})
    ctx = LocalContext(tmp_path / "run")
    train_joint(cfg, ctx, "gan", cyclegan_g=final)
    state, stage = load_state(tmp_path / "run" / "final"), load_state(final)
    assert _same(state["nets"]["G_deg"], stage["nets"]["G"])
    assert _same(state["nets"]["D_deg"], stage["nets"]["D"])  # BatchNorm statistics included
    assert all(np.isfinite(ctx.reports[-1][f"loss/{k}"]) for k in ("deg_color", "deg_texture", "deg_d"))


def _g_grads(loop: JointSRLoop) -> list[torch.Tensor]:
    return [p.grad.clone() for p in loop.nets["G_deg"].parameters()]  # type: ignore[union-attr]


def test_the_sr_gradient_reaches_g_scaled_by_sr_weight(
    noisy_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    """G's own objective weighs 0 here, so its gradient after one step is the SR one alone: zero at
    ``sr_weight: 0``, linear in it, and the autograd gradient of the pixel loss through ``G``."""
    cg = {**noisy_stage[0], "frequency_separation": {"color_weight": 0.0, "texture_weight": 0.0}}
    final = noisy_stage[1]

    def loop(weight: float) -> JointSRLoop:
        cfg = joint_cfg(
            data, cg, {"lr": 1e-3, "sr_weight": weight, "phases": ["pretrain"]}, pretrain={"iters": 1}
        )
        return JointSRLoop(cfg, LocalContext(tmp_path / str(weight)), "pretrain", cyclegan_g=final)

    grads = {}
    for weight in (0.0, 1.0, 2.0):
        lp = loop(weight)
        lp.train_step(0)
        grads[weight] = _g_grads(lp)
    assert all(not g.any() for g in grads[0.0])
    assert sum(float(g.abs().sum()) for g in grads[1.0]) > 0
    for g1, g2 in zip(grads[1.0], grads[2.0], strict=True):
        torch.testing.assert_close(g2, 2 * g1)
    # the same gradient, computed end to end: pixel loss of SR(G(x)) (straight through the rounding)
    ref = loop(1.0)
    fwd = ref.joint_batch(0)
    lr = fwd.lr_g + (fwd.lr - fwd.lr_g).detach()
    loss = F.mse_loss(ref.nets["G"](lr), fwd.hr)
    want = torch.autograd.grad(loss, list(ref.nets["G_deg"].parameters()))
    for got, w in zip(grads[1.0], want, strict=True):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-8)


# ------------------------------------------------------------------------------------ 4. resume
def test_a_joint_run_resumes_exactly(
    noisy_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    cg, final = noisy_stage
    cfg = joint_cfg(
        data,
        cg,
        {"lr": 1e-3, "sr_weight": 0.5},
        ema={"decay": 0.9},  # the SR loop's own per-step work (EMA, schedules) runs in the joint step too
        mix_prob=0.5,
        gan={"iters": 6},
        eval_every=1,
        checkpoint_every=3,
    )
    straight = LocalContext(tmp_path / "straight")
    train_joint(cfg, straight, "gan", cyclegan_g=final)
    broken = CrashAfterCheckpoint(tmp_path / "resumed")
    broken.crash_at = 3
    with pytest.raises(_Crash):
        train_joint(cfg, broken, "gan", cyclegan_g=final)
    resumed = LocalContext(tmp_path / "resumed")
    train_joint(cfg, resumed, "gan", cyclegan_g=final)
    assert resumed.reports[0]["step"] == 4
    a, b = load_state(tmp_path / "straight" / "final"), load_state(tmp_path / "resumed" / "final")
    assert set(a["nets"]) == {"G", "D", "G_ema", "G_deg", "D_deg"}
    assert set(a["optimizers"]) == {"G", "D", "G_deg", "D_deg"}
    for key in ("nets", "optimizers", "schedulers", "ranks"):
        _assert_identical(a[key], b[key], key)
    losses = lambda reports: [{k: v for k, v in r.items() if k.startswith("loss/")} for r in reports]  # noqa: E731
    assert losses(resumed.reports) == losses(straight.reports[3:])
    assert _same(read_generator(tmp_path / "resumed" / "final" / DEGRADATION_DIR)[0], a["nets"]["G_deg"])


def test_a_ddp_wrapped_joint_run_is_the_plain_run(
    noisy_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    """One gloo rank: every net DDP-wrapped (G's noise keyword and attributes through the wrapper, one
    backward per wrapped forward) trains exactly like the unwrapped loop."""
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from csrgan.train.ray_train import ddp_kwargs

    class DDPContext(LocalContext):
        def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
            return DistributedDataParallel(model, **ddp_kwargs())

    cg, final = noisy_stage
    cfg = joint_cfg(data, cg, {"lr": 1e-3, "sr_weight": 1.0})
    train_joint(cfg, LocalContext(tmp_path / "plain"), "gan", cyclegan_g=final)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        train_joint(cfg, DDPContext(tmp_path / "ddp"), "gan", cyclegan_g=final)
    finally:
        dist.destroy_process_group()
    a, b = load_state(tmp_path / "plain" / "final"), load_state(tmp_path / "ddp" / "final")
    for name in ("G_deg", "D_deg", "G"):
        torch.testing.assert_close(b["nets"][name], a["nets"][name], rtol=1e-5, atol=1e-7)
    assert not _same(b["nets"]["G_deg"], load_state(final)["nets"]["G"])


def test_a_joint_gan_phase_continues_the_g_of_a_joint_pretraining(
    noisy_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    cg, final = noisy_stage
    joint = {"lr": 1e-3, "sr_weight": 1.0, "phases": ["pretrain", "gan"]}
    cfg = joint_cfg(data, cg, joint, pretrain={"iters": 2})
    pre = launch("pretrain", cfg, tmp_path / "pretrain", {"cyclegan": final})
    assert pre.final is not None and (pre.final / DEGRADATION_DIR / "generator.pt").is_file()
    gan = JointSRLoop(cfg, LocalContext(tmp_path / "gan"), "gan", init_from=pre.final, cyclegan_g=final)
    before = load_state(pre.final)["nets"]
    assert _same(gan.nets["G_deg"].state_dict(), before["G_deg"])
    assert _same(gan.nets["D_deg"].state_dict(), before["D_deg"])
    assert not _same(before["G_deg"], load_state(final)["nets"]["G"])
    # a pre-training that did not train G jointly cannot be continued as if it had
    two = joint_cfg(data, cg, {**joint, "phases": ["gan"]}, pretrain={"iters": 1})
    train_sr(two, LocalContext(tmp_path / "two_pre"), "pretrain", cyclegan_g=final)
    with pytest.raises(ValueError, match="no jointly trained degradation"):
        JointSRLoop(
            cfg,
            LocalContext(tmp_path / "x"),
            "gan",
            init_from=tmp_path / "two_pre" / "final",
            cyclegan_g=final,
        )


# ---------------------------------------------------------------------------- 5. stages and config
def test_the_stage_table_dispatches_joint_phases(
    noisy_stage: tuple[dict[str, Any], Path],
    data: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import csrgan.train.stages as stages

    calls: list[tuple[str, str, Any]] = []
    monkeypatch.setattr(
        stages, "train_joint", lambda cfg, ctx, phase, **kw: calls.append(("joint", phase, kw))
    )
    monkeypatch.setattr(stages, "train_sr", lambda cfg, ctx, phase, **kw: calls.append(("sr", phase, kw)))
    cg, final = noisy_stage
    inputs = {"cyclegan": final, "pretrain": tmp_path}
    for joint, want in (
        ({"phases": ["gan"]}, ["sr", "joint"]),
        ({"phases": ["pretrain", "gan"]}, ["joint", "joint"]),
        (None, ["sr", "sr"]),
    ):
        calls.clear()
        cfg = joint_cfg(data, cg, joint)
        for phase in ("pretrain", "gan"):
            get_stage(phase).loop(cfg, LocalContext(tmp_path), inputs)
        assert [c[0] for c in calls] == want, joint
        assert calls[1][2] == {"init_from": tmp_path, "cyclegan_g": final}
    # the same inputs as the two-stage phases: the degradation stage's final/ (and the pre-training's)
    for pre in (0, 2):
        two, one = (
            joint_cfg(data, cg, j, pretrain={"iters": pre}) for j in (None, {"phases": ["pretrain", "gan"]})
        )
        assert [get_stage(s).inputs(one) for s in ("pretrain", "gan")] == [
            get_stage(s).inputs(two) for s in ("pretrain", "gan")
        ]
        assert get_stage("gan").inputs(one) == (("cyclegan", "pretrain") if pre else ("cyclegan",))


def test_joint_training_with_the_cyclegan_learner_is_refused_before_anything_starts(
    noisy_stage: tuple[dict[str, Any], Path], data: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(
        (ConfigError, ValueError), match=r"implemented for cyclegan\.learner frequency_separation"
    ):
        joint_cfg(data, {"learner": "cyclegan"}, {"phases": ["gan"]})  # the config says so first
    # and a config built without validation (model_copy) is still refused at launch, before any folder
    ok = joint_cfg(data, {}, {"phases": ["gan"]})
    cfg = ok.model_copy(update={"cyclegan": ok.cyclegan.model_copy(update={"learner": "cyclegan"})})
    for stage in ("pretrain", "gan"):
        with pytest.raises(StageError, match=r"cyclegan\.learner is 'cyclegan'.*sr\.joint\.enabled: false"):
            launch(stage, cfg, tmp_path / stage, {"cyclegan": noisy_stage[1]})
        assert not (tmp_path / stage).exists()
    with pytest.raises(ValueError, match=r"cyclegan\.learner"):
        JointSRLoop(cfg, LocalContext(tmp_path / "loop"), "gan", cyclegan_g=noisy_stage[1])
    with pytest.raises(ValueError, match=r"phase 'pretrain' of this config is not one"):
        JointSRLoop(
            joint_cfg(data, {}, {"phases": ["gan"]}),
            LocalContext(tmp_path / "l2"),
            "pretrain",
            cyclegan_g=noisy_stage[1],
        )


@pytest.mark.parametrize("sr", [{"lr_source": "pipeline"}, {"mix_prob": 0.0}], ids=["pipeline", "p0"])
def test_joint_needs_the_learned_degradation(data: dict[str, Path], sr: dict[str, Any]) -> None:
    with pytest.raises((ConfigError, ValueError), match=r"sr\.joint\.enabled needs the learned degradation"):
        joint_cfg(data, {}, {}, **sr)
