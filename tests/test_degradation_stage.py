"""Spec of the degradation stage (stage 1, config section ``cyclegan``) and of how SR training uses it.

* The default learner is frequency separation (DSGAN): an identity-initialised residual ``G`` and a
  critic on high-pass parts. Its ``final/`` holds ``G``, the cached ``G(bicubic LR)`` of every training
  image (whole image, ``cache_variants`` folders for a ``G`` with a noise input) and ``fidelity.json``.
* The SR stage crops its real-like LR from that cache, aligned pixel for pixel with the HR patch.
* A quality gate (:mod:`csrgan.fidelity`) marks a stage ``poor`` when it lost content or did not move
  the statistics toward the real LR; a poor stage is refused everywhere (library, sweep plan, CLI)
  unless ``cyclegan.accept_poor``.
* ``p = 0`` and the other LR sources (``pipeline``, ``paired``) never build ``G`` nor read a cache.
* The GAN phase's learning-rate schedule is data (``sr.gan.schedule``).

Tiny everything: 4 HR images (not multiples of 4, so modcrop matters), 8 px LR patches, 4-channel nets.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch
import yaml
from typer.testing import CliRunner

from csrgan.config import ExperimentConfig, validate_config
from csrgan.data.datasets import CachedLR, ImageFolder, PairedPatchDataset, bicubic_lr, list_images
from csrgan.data.degradations import default_pipeline, degrade_exact
from csrgan.data.io import read_image, to_tensor, to_uint8, write_image
from csrgan.data.resize import modcrop
from csrgan.fidelity import DEFAULT_MIN_LOWFREQ_PSNR, FIDELITY_KEYS, fidelity, gate
from csrgan.models.artifacts import load_generator
from csrgan.models.dsgan import ResidualDegradationGenerator
from csrgan.storage import SweepLayout
from csrgan.sweep.driver import SweepError, plan_sweep
from csrgan.sweep.stages import build_shared_stages, ensure_stage, stage_ref
from csrgan.train.checkpoint import load_state
from csrgan.train.context import LocalContext
from csrgan.train.degradation import (
    STREAM_CACHE,
    PoorStageError,
    apply_generator,
    judge_stage,
    lr_cache_dirs,
    require_usable,
)
from csrgan.train.dsgan import LOSS_KEYS, DSGANLoop, train_dsgan
from csrgan.train.keys import cyclegan_key
from csrgan.train.launch import launch
from csrgan.train.loop import derive_seed
from csrgan.train.srgan import lr_source, train_sr
from csrgan.train.stages import StageError, get_stage

REPO = Path(__file__).resolve().parents[1]
SCALE = 4
N_IMAGES = 4
runner = CliRunner()

#: the default quality gate (csrgan.fidelity)
THRESHOLDS = {"min_lowfreq_psnr": 30.0, "max_gx_psnr": 45.0, "max_hf_w1_ratio": 1.5}


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny convs gain nothing from threads; on a shared 2-core box OpenMP spin-waiting slows them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """hr/: 4 HR crops of 70 x 66 px (modcrop -> 68 x 64, LR 17 x 16); real/: 8 LR images (32 px) made
    by csrgan's default degradation pipeline from *other* crops, so the two domains really differ."""
    root = tmp_path_factory.mktemp("degradation_data")
    pipe, rng = default_pipeline(), np.random.default_rng(0)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    for k, img in enumerate(photos):
        write_image(root / "hr" / f"img{k}.png", np.ascontiguousarray(img[100:170, 120:186]))
        for j in range(2):
            other = np.ascontiguousarray(img[-128:, 128 * j : 128 * (j + 1)])
            write_image(root / "real" / f"r{k}_{j}.png", degrade_exact(pipe, other, SCALE, rng)[0])
    return {"hr": root / "hr", "real": root / "real", "root": root}


def make_cfg(
    data: dict[str, Path],
    cyclegan: dict[str, Any] | None = None,
    sr: dict[str, Any] | None = None,
    train_lr: Path | None = None,
    **top: Any,
) -> ExperimentConfig:
    """A tiny experiment: residual G (nf 4, 1 block, 1 noise channel), DSGAN critic (ndf 4), 3 iterations;
    SR: 8-channel SRResNet on 32 px HR patches, p = 1 from the degradation stage, no GAN phase."""
    cg = {
        "generator": {"type": "residual", "nf": 4, "n_blocks": 1, "noise_channels": 1},
        "discriminator": {"type": "dsgan", "ndf": 4},
        "iters": 3,
        "batch_size": 2,
        "patch_size": 8,
        "cache_variants": 3,
        "eval_every": 1000,
        "checkpoint_every": 1000,
    }
    s = {
        "generator": {"channels": 8, "n_blocks": 1},
        "discriminator": {"channels": 8},
        "mix_prob": 1.0,
        "pretrain": {"iters": 0},
        "gan": {"iters": 0, "content": {"type": "mse"}},
        "batch_size": 2,
        "patch_size": 32,
        "eval_every": 1000,
        "checkpoint_every": 1000,
    }
    for base, over in ((cg, cyclegan or {}), (s, sr or {})):
        for k, v in over.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    data_sec = {"train_hr": str(data["hr"]), "real_lr": str(data["real"]), "scale": SCALE, "test_sets": []}
    if train_lr is not None:
        data_sec["train_lr"] = str(train_lr)
    raw = {
        "name": "deg",
        "seed": 0,
        "data": data_sec,
        "cyclegan": cg,
        "sr": s,
        "eval": {"metrics": ["psnr", "ssim"], "grid_images": 0},
        "resources": {"threads_per_worker": 1},
        **top,
    }
    return validate_config(raw)


#: Nothing can change G: both terms of its objective weigh 0 (its critic still trains).
FROZEN_G = {
    "generator": {"noise_channels": 0},
    "frequency_separation": {"color_weight": 0.0, "texture_weight": 0.0},
    "iters": 2,
}


@pytest.fixture(scope="module")
def noisy_stage(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentConfig, Path]:
    """The default learner, trained 4 iterations (evaluated at 2 and 4) through the launcher."""
    cfg = make_cfg(data, {"iters": 4, "eval_every": 2})
    res = launch("cyclegan", cfg, tmp_path_factory.mktemp("noisy") / "cyclegan")
    assert res.final is not None and not res.diverged
    return cfg, res.out_dir


@pytest.fixture(scope="module")
def identity_stage(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentConfig, Path]:
    """A stage whose G stays exactly the identity (no noise input, zero-weight objective)."""
    cfg = make_cfg(data, FROZEN_G)
    res = launch("cyclegan", cfg, tmp_path_factory.mktemp("identity") / "cyclegan")
    assert res.final is not None
    return cfg, res.final


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _hr_images(data: dict[str, Path]) -> list[np.ndarray]:
    return [modcrop(read_image(p), SCALE) for p in list_images(data["hr"])]


# ------------------------------------------------------------------------------- 1. the stage itself
def test_the_residual_generator_is_exactly_the_identity_at_step_0(
    data: dict[str, Path], tmp_path: Path
) -> None:
    G = ResidualDegradationGenerator(nf=8, n_blocks=2, noise_channels=2)
    assert G.keeps_init and G.receptive_radius == 6
    assert not G.tail.weight.any() and not G.tail.bias.any()
    x = torch.rand(2, 3, 13, 9, generator=torch.Generator().manual_seed(0))  # any size
    assert torch.equal(G(x), x) and torch.equal(G(x, generator=torch.Generator().manual_seed(5)), x)
    assert torch.equal(ResidualDegradationGenerator(noise_channels=0)(x), x)
    # the learner keeps that init (no junyanz re-initialisation of a network that keeps its own)
    loop = DSGANLoop(make_cfg(data), LocalContext(tmp_path))
    assert set(loop.nets) == {"G", "D"} and loop.exported == "G"
    with torch.no_grad():
        assert torch.equal(loop.nets["G"](x), x)


def test_the_stage_trains_and_writes_g_its_lr_cache_and_fidelity(
    noisy_stage: tuple[ExperimentConfig, Path], data: dict[str, Path]
) -> None:
    cfg, out = noisy_stage
    final = out / "final"
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["phase"] == "cyclegan" and r["diverged"] == 0 for r in rows)
    assert all(np.isfinite(r[k]) for r in rows for k in LOSS_KEYS)
    for r in rows:  # every evaluation reports the fidelity and the verdict as a number
        assert {f"fidelity/{k}" for k in FIDELITY_KEYS} <= set(r) and r["fidelity/poor"] in (0.0, 1.0)

    conf = json.loads((final / "generator.json").read_text())
    assert (conf["role"], conf["type"], conf["scale"]) == ("degradation", "residual", SCALE)
    assert conf["args"] == {"nf": 4, "n_blocks": 1, "noise_channels": 1}
    assert set(load_state(final)["nets"]) == {"G", "D"}

    # lr/<v>/<stem>.png for v < cache_variants (G has a noise input), every training image, LR size
    hrs = _hr_images(data)
    stems = [p.stem for p in list_images(data["hr"])]
    assert lr_cache_dirs(final) == [final / "lr" / str(v) for v in range(3)]
    G = load_generator(final, "degradation", scale=SCALE)
    for v in range(3):
        assert sorted(p.stem for p in (final / "lr" / str(v)).iterdir()) == stems
        for k, (stem, hr) in enumerate(zip(stems, hrs, strict=True)):
            cached = read_image(final / "lr" / str(v) / f"{stem}.png")
            bic = bicubic_lr(hr, SCALE)
            assert cached.shape == bic.shape == (hr.shape[0] // SCALE, hr.shape[1] // SCALE, 3)
            # G of the WHOLE bicubic LR image, with the variant's own noise seed
            seed = derive_seed(cfg.cyclegan.seed, STREAM_CACHE, v, k)
            with torch.no_grad():
                want = to_uint8(apply_generator(G, to_tensor(bic), seed))[0]
            assert np.array_equal(cached, want), (v, stem)
    first = read_image(final / "lr" / "0" / f"{stems[0]}.png")
    assert any(
        not np.array_equal(first, read_image(final / "lr" / str(v) / f"{stems[0]}.png")) for v in (1, 2)
    )

    info = json.loads((final / "fidelity.json").read_text())
    assert set(info) == {"fidelity", "variants", "images", "key", "step"}
    assert (info["variants"], info["images"], info["key"], info["step"]) == (
        3,
        N_IMAGES,
        cyclegan_key(cfg),
        4,
    )
    fid = info["fidelity"]
    assert set(FIDELITY_KEYS) | {"verdict", "reasons", "thresholds"} == set(fid)
    assert fid["thresholds"] == THRESHOLDS
    assert fid["verdict"] in ("ok", "poor") and (fid["verdict"] == "poor") == bool(fid["reasons"])
    assert rows[-1]["fidelity/poor"] == float(fid["verdict"] == "poor")
    # the stored numbers are the fidelity of every cached variant, pooled, against the real LR folder
    reals = list(ImageFolder(data["real"]))
    again = fidelity(
        [bicubic_lr(h, SCALE) for _ in range(3) for h in hrs],
        [read_image(final / "lr" / str(v) / f"{s}.png") for v in range(3) for s in stems],
        reals,
    )
    assert rows[-1]["fidelity/hf_w1_ratio"] == pytest.approx(fid["hf_w1_ratio"])  # the last evaluation
    assert {k: fid[k] for k in FIDELITY_KEYS} == pytest.approx(again)


def test_a_g_without_noise_caches_one_variant(identity_stage: tuple[ExperimentConfig, Path]) -> None:
    cfg, final = identity_stage
    assert cfg.cyclegan.cache_variants == 3  # asked for, but a deterministic G has only one output
    assert lr_cache_dirs(final) == [final / "lr" / "0"]
    assert json.loads((final / "fidelity.json").read_text())["variants"] == 1


def test_a_noisy_g_caches_every_variant_under_ddp(data: dict[str, Path], tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from csrgan.train.ray_train import ddp_kwargs

    class DDPContext(LocalContext):
        def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
            return DistributedDataParallel(model, **ddp_kwargs())

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        train_dsgan(make_cfg(data, {"iters": 1}), DDPContext(tmp_path))
    finally:
        dist.destroy_process_group()
    assert len(lr_cache_dirs(tmp_path / "final")) == 3


# ---------------------------------------------------------------------------------------- 2. alignment
def test_an_identity_g_caches_exactly_the_bicubic_lr(
    identity_stage: tuple[ExperimentConfig, Path], data: dict[str, Path]
) -> None:
    _, final = identity_stage
    assert not load_state(final)["nets"]["G"]["tail.weight"].any()  # nothing updated G
    for path, hr in zip(list_images(data["hr"]), _hr_images(data), strict=True):
        assert np.array_equal(read_image(final / "lr" / "0" / path.name), bicubic_lr(hr, SCALE)), path.name


def _sr_patches(data: dict[str, Path], alt: Any = None, p: float = 0.0) -> PairedPatchDataset:
    return PairedPatchDataset(
        data["hr"], scale=SCALE, patch_size=32, cache=True, length=48, seed=3, alt=alt, mix_prob=p
    )


def _lrs(ds: PairedPatchDataset, epoch: int) -> list[torch.Tensor]:
    ds.set_epoch(epoch)
    return [ds[i]["lr"] for i in range(len(ds))]


def test_sr_patches_from_the_cache_align_with_the_hr_pixel_for_pixel(
    identity_stage: tuple[ExperimentConfig, Path], data: dict[str, Path], tmp_path: Path
) -> None:
    """With G = identity the cached LR is bicubic, so p = 1 must give exactly the p = 0 patches: the
    same crop position, the same flips. A cache shifted by one pixel must not."""
    cfg, final = identity_stage
    alt = lr_source(cfg, final)  # what the SR stage builds
    assert isinstance(alt, CachedLR) and alt.id == f"cyclegan-{final.parent.name}"
    plain, mixed = _sr_patches(data), _sr_patches(data, alt, 1.0)
    assert all(mixed[i]["alt"] for i in range(len(mixed)))
    for epoch in range(3):
        assert all(torch.equal(a, b) for a, b in zip(_lrs(mixed, epoch), _lrs(plain, epoch), strict=True))

    shifted = tmp_path / "shifted" / "0"
    shutil.copytree(final / "lr" / "0", shifted)
    for p in shifted.iterdir():
        write_image(p, np.roll(read_image(p), 1, axis=1))
    off = _sr_patches(data, CachedLR([shifted], list_images(data["hr"]), SCALE, id="shifted"), 1.0)
    for epoch in range(3):
        same = [torch.equal(a, b) for a, b in zip(_lrs(off, epoch), _lrs(plain, epoch), strict=True)]
        assert sum(same) <= 0.1 * len(same), f"a one-pixel shift went unnoticed in {sum(same)} patches"


# ----------------------------------------------------------------------------------------- 3. the gate
def _domains(data: dict[str, Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [bicubic_lr(h, SCALE) for h in _hr_images(data)], list(ImageFolder(data["real"]))


def test_the_gate_calls_the_identity_poor_nothing_learned(data: dict[str, Path]) -> None:
    xs, reals = _domains(data)
    fid = fidelity(xs, xs, reals)
    assert fid["hf_w1_ratio"] == 1.0 and fid["lowfreq_psnr"] == float("inf")  # nothing changed
    v = gate(fid)
    assert v["verdict"] == "poor" and len(v["reasons"]) == 1
    assert v["reasons"][0].startswith("nothing learned")
    assert v["thresholds"] == THRESHOLDS


@pytest.mark.parametrize("damage", ["colour-shift", "channel-swap", "destroyed"])
def test_the_gate_calls_lost_content_poor(data: dict[str, Path], damage: str) -> None:
    xs, reals = _domains(data)
    rng = np.random.default_rng(0)
    if damage == "colour-shift":
        gs = [np.clip(x.astype(int) + [60, -40, 0], 0, 255).astype(np.uint8) for x in xs]
    elif damage == "channel-swap":
        gs = [np.ascontiguousarray(x[..., ::-1]) for x in xs]
    else:
        gs = [rng.integers(0, 256, x.shape, dtype=np.uint8) for x in xs]
    v = gate(fidelity(xs, gs, reals))
    assert v["verdict"] == "poor"
    assert any(r.startswith("content lost") for r in v["reasons"]), v["reasons"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[np.ndarray]]:
    """The demo set: 3 training HR halves (modcropped) and its 36 real LR crops (default pipeline)."""
    from csrgan.data.demo import build_demo, demo_layout

    root = tmp_path_factory.mktemp("demo")
    build_demo(root, seed=0)
    layout = demo_layout(root)
    return {
        "hr": [modcrop(im, SCALE) for im in ImageFolder(layout.train_hr)],
        "real": list(ImageFolder(layout.train_lr_real)),
    }


@pytest.fixture(scope="module")
def true_draws(demo: dict[str, list[np.ndarray]]) -> list[dict[str, float]]:
    """The fidelity of the demo's own degradation (the default pipeline) against the demo's real LR (the
    same pipeline on the other halves): 12 seeds, each with 4 draws per training image pooled, as the
    stage pools its cached variants (``cyclegan.cache_variants``, default 4)."""
    xs = [bicubic_lr(h, SCALE) for h in demo["hr"]]
    pipe = default_pipeline()
    out = []
    for seed in range(12):
        rng = np.random.default_rng([seed, 99])
        gs = [degrade_exact(pipe, h, SCALE, rng)[0] for _ in range(4) for h in demo["hr"]]
        out.append(fidelity(xs * 4, gs, demo["real"]))
    return out


def test_the_true_degradation_passes_the_gate(true_draws: list[dict[str, float]]) -> None:
    """The defaults are set so that the degradation that really made the real domain is accepted."""
    assert all(f["lowfreq_psnr"] >= DEFAULT_MIN_LOWFREQ_PSNR for f in true_draws)  # content: always kept
    bad = [
        (round(f["hf_w1_ratio"], 3), round(f["gx_psnr"], 1)) for f in true_draws if gate(f)["verdict"] != "ok"
    ]
    assert not bad, bad


def _with(cfg: ExperimentConfig, **cyclegan: Any) -> ExperimentConfig:
    raw = cfg.model_dump()
    for k, v in cyclegan.items():
        raw["cyclegan"][k] = {**raw["cyclegan"][k], **v} if isinstance(v, dict) else v
    return validate_config(raw)


def test_judge_stage_reapplies_the_current_gate(identity_stage: tuple[ExperimentConfig, Path]) -> None:
    cfg, final = identity_stage
    q = judge_stage(final, cfg)
    assert q["verdict"] == "poor" and q["accepted_poor"] is False
    assert q["hf_w1_ratio"] == 1.0 and set(FIDELITY_KEYS) <= set(q)
    assert q["reasons"][0].startswith("nothing learned")
    # the thresholds of the config that uses the stage, not the ones it was built with
    lenient = judge_stage(final, _with(cfg, gate={"max_gx_psnr": float("inf")}))
    assert lenient["verdict"] == "ok" and lenient["thresholds"]["max_gx_psnr"] == float("inf")
    assert judge_stage(final, _with(cfg, accept_poor=True))["accepted_poor"] is True


def test_a_poor_stage_is_refused_unless_accepted(
    identity_stage: tuple[ExperimentConfig, Path], tmp_path: Path
) -> None:
    cfg, final = identity_stage
    with pytest.raises(PoorStageError, match=r"is POOR: nothing learned.*cyclegan\.accept_poor: true"):
        require_usable(judge_stage(final, cfg), final)
    require_usable(judge_stage(final, _with(cfg, accept_poor=True)), final)  # accepted: no error
    assert (final / "generator.pt").is_file()  # nothing was deleted

    # a broken G: its recorded fidelity says it destroyed the content
    broken = tmp_path / "broken" / "final"
    shutil.copytree(final, broken)
    info = json.loads((broken / "fidelity.json").read_text())
    info["fidelity"].update(lowfreq_psnr=12.0, gx_psnr=11.0, hf_w1_ratio=0.5)
    (broken / "fidelity.json").write_text(json.dumps(info))
    q = judge_stage(broken, cfg)
    assert q["verdict"] == "poor" and [r.split(":")[0] for r in q["reasons"]] == ["content lost"]
    with pytest.raises(PoorStageError, match="content lost"):
        require_usable(q, broken)
    # a stage made before the gate existed has no fidelity.json: poor
    (broken / "fidelity.json").unlink()
    q = judge_stage(broken, cfg)
    assert q["verdict"] == "poor" and "no fidelity.json" in q["reasons"][0]


def _publish(ref: Any, final: Path) -> None:
    """Make ``ref`` a finished shared stage holding a copy of ``final``."""

    def build(d: Path) -> dict[str, Any]:
        shutil.copytree(final, d / "final")
        return {"step": 2}

    ensure_stage(ref, build, poll_s=0.01)


def test_shared_stages_record_the_verdict_and_refuse_a_poor_stage(
    identity_stage: tuple[ExperimentConfig, Path], tmp_path: Path
) -> None:
    cfg, final = identity_stage
    layout = SweepLayout(tmp_path / "storage", "sweep")
    ref = stage_ref("cyclegan", cfg, layout)
    _publish(ref, final)
    with pytest.raises(PoorStageError, match="cyclegan.accept_poor"):
        build_shared_stages(cfg, layout, only=("cyclegan",))
    assert ref.info()["quality"]["verdict"] == "poor" and ref.is_done()  # recorded, kept
    out = build_shared_stages(_with(cfg, accept_poor=True), layout, only=("cyclegan",))
    assert out["cyclegan"].reused and out["cyclegan"].info["quality"]["accepted_poor"] is True


def test_plan_sweep_refuses_a_reused_poor_stage_before_anything_starts(
    identity_stage: tuple[ExperimentConfig, Path], data: dict[str, Path], tmp_path: Path
) -> None:
    _, final = identity_stage
    search = {
        "method": "grid",
        "metric": {"name": "x/psnr"},
        "parameters": {"sr.mix_prob": {"values": [0.0, 1.0]}},
        "seeds": [0],
    }
    cfg = make_cfg(data, FROZEN_G, storage=str(tmp_path / "storage"), search=search)
    layout = SweepLayout.of(cfg.storage, cfg.name)
    _publish(stage_ref("cyclegan", cfg, layout), final)  # the key ignores sr.*: one stage for p = 1
    with pytest.raises(SweepError, match=r"POOR: nothing learned.*cyclegan\.accept_poor"):
        plan_sweep(cfg, echo=lambda _: None)
    assert not layout.tune.exists()
    plan = plan_sweep(_with(cfg, accept_poor=True), echo=lambda _: None)
    assert len(plan.trials) == 2


def test_cli_train_srgan_exits_2_for_a_poor_stage(
    identity_stage: tuple[ExperimentConfig, Path], tmp_path: Path
) -> None:
    import typer

    from csrgan.cli import train as train_cli

    app = typer.Typer()
    app.add_typer(train_cli.app, name="train")
    cfg, final = identity_stage
    raw = cfg.model_dump(mode="json")
    raw["sr"]["pretrain"] = {**raw["sr"]["pretrain"], "iters": 2}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    args = ["train", "srgan", str(path), "--workers", "0", "--out", str(out), "--cyclegan", str(final)]

    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "is POOR" in res.output and "cyclegan.accept_poor: true" in res.output
    assert "Traceback" not in res.output and not (out / "pretrain").exists()

    ok = runner.invoke(app, [*args, "--set", "cyclegan.accept_poor=true"])
    assert ok.exit_code == 0, ok.output
    assert all(r["mix/g_fraction"] == 1.0 for r in _rows(out / "pretrain" / "metrics.jsonl"))


# ------------------------------------------------------------------------------------------ 4. p = 0
def _paired_dir(data: dict[str, Path]) -> Path:
    """``data.train_lr`` for ``lr_source: paired``: the default pipeline's LR of each modcropped HR."""
    out = data["root"] / "train_lr"
    if not out.is_dir():
        rng = np.random.default_rng(1)
        for p, hr in zip(list_images(data["hr"]), _hr_images(data), strict=True):
            write_image(out / p.name, degrade_exact(default_pipeline(), hr, SCALE, rng)[0])
    return out


@pytest.mark.parametrize(
    ("sr", "uses"),
    [
        ({"mix_prob": 0.0}, False),
        ({"mix_prob": 1.0, "lr_source": "pipeline"}, False),
        ({"mix_prob": 1.0, "lr_source": "paired"}, False),
        ({"mix_prob": 0.3}, True),
    ],
    ids=["p0", "pipeline", "paired", "cyclegan"],
)
def test_only_p_positive_with_the_cyclegan_source_needs_the_degradation_stage(
    data: dict[str, Path], sr: dict[str, Any], uses: bool
) -> None:
    cfg = make_cfg(data, sr=sr, train_lr=_paired_dir(data))
    assert cfg.sr.uses_degradation_stage() is uses
    for stage in ("pretrain", "gan"):
        assert get_stage(stage).inputs(cfg) == (("cyclegan",) if uses else ())


def test_p0_builds_neither_g_nor_the_cache(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csrgan.train.srgan as srgan_module

    cfg = make_cfg(data, sr={"mix_prob": 0.0, "pretrain": {"iters": 2}})
    assert lr_source(cfg, None) is None
    assert lr_source(make_cfg(data, sr={"mix_prob": 0.0, "lr_source": "pipeline"}), None) is None

    def forbidden(*a: Any, **k: Any) -> Any:
        raise AssertionError("p = 0 must not load a degradation G or its cache")

    for name in ("load_with_spec", "lr_cache_dirs", "CachedLR", "PipelineLR"):
        monkeypatch.setattr(srgan_module, name, forbidden)
    result = train_sr(cfg, LocalContext(tmp_path / "run"), "pretrain")
    assert result["step"] == 2 and result["mix/g_fraction"] == 0.0


def test_a_degradation_artefact_given_at_p0_is_refused(
    identity_stage: tuple[ExperimentConfig, Path], data: dict[str, Path], tmp_path: Path
) -> None:
    _, final = identity_stage
    cfg = make_cfg(data, sr={"mix_prob": 0.0, "pretrain": {"iters": 2}})
    with pytest.raises(ValueError, match="does not use the degradation stage, but one was given"):
        train_sr(cfg, LocalContext(tmp_path / "run"), "pretrain", cyclegan_g=final)
    with pytest.raises(StageError, match=r"not used: \['cyclegan'\]"):
        launch("pretrain", cfg, tmp_path / "launched", {"cyclegan": final})
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "launched").exists()


# ---------------------------------------------------------------------- 5. pipeline and paired sources
@pytest.mark.parametrize("source", ["pipeline", "paired"])
def test_pipeline_and_paired_sources_train(data: dict[str, Path], tmp_path: Path, source: str) -> None:
    cfg = make_cfg(
        data,
        sr={"lr_source": source, "pretrain": {"iters": 40, "lr": 2e-3}, "eval_every": 10},
        train_lr=_paired_dir(data) if source == "paired" else None,
    )
    res = launch("pretrain", cfg, tmp_path / "pretrain")
    rows = _rows(tmp_path / "pretrain" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20, 30, 40] and res.metrics["step"] == 40
    assert all(r["mix/g_fraction"] == 1.0 for r in rows)  # every training LR came from the source
    assert rows[-1]["loss/pixel"] < 0.8 * rows[0]["loss/pixel"], [r["loss/pixel"] for r in rows]
    assert json.loads((tmp_path / "pretrain" / "run.json").read_text())["inputs"] == {}


def test_pipeline_training_is_deterministic(data: dict[str, Path], tmp_path: Path) -> None:
    def weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        cfg = make_cfg(
            data, sr={"lr_source": "pipeline", "mix_prob": 0.5, "pretrain": {"iters": 6}}, seed=seed
        )
        train_sr(cfg, LocalContext(tmp_path / name), "pretrain")
        return load_state(tmp_path / name / "final")["nets"]["G"]

    a, b, c = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_pipeline_training_resumes_exactly_in_a_fresh_process(tmp_path: Path) -> None:
    """tests/test_train_resume.py's protocol with half the LR from the synthetic pipeline."""
    from test_train_resume import (
        RESUME_SCRIPT,
        CrashAfterCheckpoint,
        _assert_identical,
        _Crash,
        make_images,
        resume_config,
    )

    n = 3
    make_images(tmp_path)
    raw = resume_config(tmp_path, "pretrain", n).model_dump(mode="json")
    raw["sr"].update(mix_prob=0.5, lr_source="pipeline")
    cfg = validate_config(raw)
    straight = LocalContext(tmp_path / "straight")
    train_sr(cfg, straight, "pretrain")
    broken = CrashAfterCheckpoint(tmp_path / "resumed")
    broken.crash_at = n
    with pytest.raises(_Crash):
        train_sr(cfg, broken, "pretrain")
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(cfg_file), str(tmp_path / "resumed"), "pretrain"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"RESUMED_FROM {n} TO {2 * n}" in proc.stdout
    a, b = load_state(tmp_path / "straight" / "final"), load_state(tmp_path / "resumed" / "final")
    for key in ("nets", "optimizers", "ranks"):
        _assert_identical(a[key], b[key], key)
    fractions = [r["mix/g_fraction"] for r in straight.reports]
    assert 0 < np.mean(fractions) < 1  # both LR kinds were used


# ------------------------------------------------------------------------- 6. GAN-phase step schedule
def test_gan_lr_milestones_step_the_learning_rate(data: dict[str, Path], tmp_path: Path) -> None:
    from test_train_resume import CrashAfterCheckpoint, _assert_identical, _Crash

    gan = {"iters": 6, "lr": 1e-3, "schedule": {"type": "multistep", "milestones": [3], "gamma": 0.1}}
    cfg = make_cfg(data, sr={"mix_prob": 0.0, "gan": gan, "eval_every": 1, "checkpoint_every": 2})
    ctx = LocalContext(tmp_path / "straight", keep_checkpoints=10)
    train_sr(cfg, ctx, "gan")
    # "lr" at step s is the rate of the next update: lr before the milestone, lr * gamma from it on
    assert [r["lr"] for r in ctx.reports] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-4], rel=1e-9)
    for step, want in ((2, 1e-3), (4, 1e-4), (6, 1e-4)):
        state = load_state(ctx.checkpoint_root / f"step_{step:08d}")
        assert {n: o["param_groups"][0]["lr"] for n, o in state["optimizers"].items()} == pytest.approx(
            {"G": want, "D": want}
        )
        assert state["schedulers"]["G"]["milestones"] == {3: 1}
    # resumed across the milestone: the schedule continues where it was
    broken = CrashAfterCheckpoint(tmp_path / "resumed")
    broken.crash_at = 2
    with pytest.raises(_Crash):
        train_sr(cfg, broken, "gan")
    train_sr(cfg, LocalContext(tmp_path / "resumed"), "gan")
    a, b = load_state(tmp_path / "straight" / "final"), load_state(tmp_path / "resumed" / "final")
    for key in ("nets", "optimizers", "schedulers"):
        _assert_identical(a[key], b[key], key)
    assert {r["setting/lr_schedule"] for r in ctx.reports} == {"multistep(gamma=0.1, milestones=[3])"}
    # no schedule: the constant one (a scheduler all the same), its rate reported every window
    plain = make_cfg(data, sr={"mix_prob": 0.0, "gan": {"iters": 2}, "eval_every": 1})
    ctx = LocalContext(tmp_path / "plain")
    train_sr(plain, ctx, "gan")
    assert [r["lr"] for r in ctx.reports] == [1e-4, 1e-4]  # sr.gan.lr's default
    assert {r["setting/lr_schedule"] for r in ctx.reports} == {"constant()"}
    assert set(load_state(tmp_path / "plain" / "final")["schedulers"]) == {"G", "D"}
