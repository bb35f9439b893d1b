"""Spec of the SR trainer (csrgan.train.srgan): LR mixing, the two phases, events, artefacts, divergence."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torch import nn

from csrgan.config import ExperimentConfig, validate_config
from csrgan.data.io import write_image
from csrgan.models.artifacts import load_generator, read_generator
from csrgan.train.checkpoint import load_state
from csrgan.train.context import LocalContext
from csrgan.train.srgan import LRSource, SRStep, generator_spec, train_sr

SCALE = 4


# ------------------------------------------------------------------------------------------- fixtures
def make_images(root: Path) -> dict[str, Path]:
    """4 HR training tiles (64 px) and one 64 px test image, from images bundled with scikit-image."""
    astro, cat = skdata.astronaut(), skdata.chelsea()
    for i in range(4):
        write_image(
            root / "train" / f"{i}.png", np.ascontiguousarray(astro[100 + 64 * i : 164 + 64 * i, 150:214])
        )
    write_image(root / "test" / "cat.png", np.ascontiguousarray(cat[50:114, 100:164]))
    return {"train": root / "train", "test": root / "test"}


def tiny_config(dirs: dict[str, Path], **sr: Any) -> ExperimentConfig:
    """channels 8, 1 block, 32 px HR patches, batch 2, 1 thread; extra ``sr`` keys merged in."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data": {"train_hr": str(dirs["train"]), "scale": SCALE, "test_sets": []},
        "sr": {
            "generator": {"channels": 8, "n_blocks": 1},
            "discriminator": {"channels": 8},
            "mix_prob": 0.0,
            "pretrain": {"iters": 10, "lr": 1e-3},
            "gan": {"iters": 4, "content": {"type": "mse"}},
            "batch_size": 2,
            "patch_size": 32,
            "eval_every": 1000,
            "checkpoint_every": 1000,
        },
        "eval": {"metrics": ["psnr", "ssim"]},
        "resources": {"threads_per_worker": 1},
    }
    for key, value in sr.items():
        if isinstance(value, dict):
            raw["sr"][key] = {**raw["sr"].get(key, {}), **value}
        else:
            raw["sr"][key] = value
    return validate_config(raw)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_images(tmp_path_factory.mktemp("srdata"))


def with_test_set(cfg: ExperimentConfig, dirs: dict[str, Path]) -> ExperimentConfig:
    raw = cfg.model_dump(mode="json")
    raw["data"]["test_sets"] = [{"name": "val", "hr": str(dirs["test"])}]
    return validate_config(raw)


# ------------------------------------------------------------------------------------------ LRSource
class CountingG:
    """A CycleGAN G stand-in: counts calls and samples, darkens its input by a known amount."""

    def __init__(self) -> None:
        self.calls = 0
        self.samples = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "G must run under no_grad"
        self.calls += 1
        self.samples += x.shape[0]
        return x - 0.1001


def forbidden_g(x: torch.Tensor) -> torch.Tensor:
    raise AssertionError("G must not be called when mix_prob == 0")


def test_p0_never_calls_g() -> None:
    src = LRSource(0.0, forbidden_g, seed=0, rank=0)
    lr = torch.rand(8, 3, 6, 6)
    for _ in range(50):
        out, mask = src(lr)
        assert not mask.any() and out is lr


def test_p1_always_uses_g_on_every_sample() -> None:
    g = CountingG()
    src = LRSource(1.0, g, seed=0, rank=0)
    lr = torch.full((8, 3, 6, 6), 0.5)
    for _ in range(10):
        out, mask = src(lr)
        assert mask.all()
    assert g.calls == 10 and g.samples == 80  # batched: one call per batch
    # G's output is rounded to the uint8 grid (like every real LR image)
    assert torch.equal(out, torch.full_like(lr, round((0.5 - 0.1001) * 255) / 255))
    assert torch.equal(lr, torch.full_like(lr, 0.5)), "the input batch is not modified"


def test_p_half_is_a_fair_per_sample_coin_and_g_sees_only_the_chosen() -> None:
    g = CountingG()
    src = LRSource(0.5, g, seed=3, rank=0)
    lr = torch.rand(16, 3, 4, 4)
    chosen = 0
    for _ in range(250):
        out, mask = src(lr)
        chosen += int(mask.sum())
        assert torch.equal(out[~mask], lr[~mask])
        assert not torch.equal(out[mask], lr[mask]) or not mask.any()
    assert g.samples == chosen
    # 4000 draws: sd of the fraction is 0.0079 -> +-0.03 is ~4 sd
    assert abs(chosen / 4000 - 0.5) < 0.03


def test_draws_are_seeded_per_rank_and_restored_exactly() -> None:
    a, b = LRSource(0.5, CountingG(), seed=7, rank=0), LRSource(0.5, CountingG(), seed=7, rank=0)
    other_rank = LRSource(0.5, CountingG(), seed=7, rank=1)
    assert torch.equal(a.draw(64), b.draw(64))
    assert not torch.equal(a.draw(64), other_rank.draw(64))
    saved = a.state_dict()
    expected = a.draw(100)
    fresh = LRSource(0.5, CountingG(), seed=99, rank=5)  # whatever it was seeded with
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.draw(100), expected)


def test_draws_are_coupled_across_p() -> None:
    """Same seed, larger p: the G-samples of the smaller p are a subset (cleaner p ablations)."""
    low, high = LRSource(0.3, CountingG(), 0, 0).draw(500), LRSource(0.6, CountingG(), 0, 0).draw(500)
    assert bool((low & ~high).sum() == 0) and high.sum() > low.sum()


def test_lr_source_needs_g_when_p_positive() -> None:
    with pytest.raises(ValueError, match="needs the CycleGAN generator"):
        LRSource(0.2, None, 0, 0)


# ------------------------------------------------------------------------------------------ training
def test_pretraining_reduces_pixel_loss(dirs: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_config(dirs, pretrain={"iters": 60, "lr": 2e-3}, eval_every=10)
    ctx = LocalContext(tmp_path)
    final = train_sr(cfg, ctx, "pretrain")
    losses = [r["loss/pixel"] for r in ctx.reports]
    assert len(losses) == 6  # one report per 10 steps, each the mean loss of those 10 steps
    assert losses[-1] < 0.7 * losses[0], losses
    assert final["step"] == 60 and final["phase"] == "pretrain" and final["diverged"] == 0


def test_events_reports_and_artefacts(dirs: dict[str, Path], tmp_path: Path) -> None:
    cfg = with_test_set(tiny_config(dirs, pretrain={"iters": 10}, eval_every=4, checkpoint_every=5), dirs)
    ctx = LocalContext(tmp_path, keep_checkpoints=10)
    final = train_sr(cfg, ctx, "pretrain")
    # one report per event: eval at 4, 8, 10; checkpoint at 5 and 10 (+ the final artefact at 10)
    assert [r["step"] for r in ctx.reports] == [4, 5, 8, 10]
    assert [("val/psnr" in r, "checkpoint" in r) for r in ctx.reports] == [
        (True, False),
        (False, True),
        (True, False),
        (True, True),
    ]
    # checkpoints are always checkpoints/step_XXXXXXXX, never final/
    assert [r["checkpoint"] for r in ctx.reports if "checkpoint" in r] == [
        str(tmp_path / "checkpoints" / "step_00000005"),
        str(tmp_path / "checkpoints" / "step_00000010"),
    ]
    from csrgan.metrics import PROTOCOL

    last = ctx.reports[-1]
    assert last["protocol"] == PROTOCOL.id and last["weights"] == "none"  # no VGG, no LPIPS asked
    assert {"val/psnr", "val/ssim", "loss/pixel", "epoch", "step", "phase"} <= set(last)
    assert "val/lpips" not in last
    assert final["val/psnr"] == last["val/psnr"]
    epochs = [r["epoch"] for r in ctx.reports]
    assert epochs == sorted(epochs) and epochs[-1] == pytest.approx(10 * 2 / 4)
    assert (tmp_path / "checkpoints" / "step_00000005" / "state.pt").is_file()
    assert (tmp_path / "checkpoints" / "step_00000010" / "state.pt").is_file()
    assert not (tmp_path / ".staging").exists()
    assert sorted(p.name for p in (tmp_path / "grids" / "pretrain").iterdir()) == [
        "val_step10.png",
        "val_step4.png",
        "val_step8.png",
    ]
    # final/: full state (resumable) + generator.pt + generator.json; weights_only loads
    final_dir = tmp_path / "final"
    state = load_state(final_dir)
    assert state["step"] == 10 and state["stage"] == "pretrain"
    conf = json.loads((final_dir / "generator.json").read_text())
    assert (conf["format"], conf["role"], conf["type"], conf["scale"]) == (
        "csrgan.generator/v2",
        "sr",
        "srresnet",
        SCALE,
    )
    assert (
        conf["args"]["channels"] == 8 and conf["meta"]["stage"] == "pretrain" and conf["meta"]["step"] == 10
    )
    assert conf == generator_spec(cfg, **conf["meta"]).to_json()
    g = load_generator(final_dir, "sr")
    assert not g.training and not any(p.requires_grad for p in g.parameters())
    for k, v in g.state_dict().items():
        assert torch.equal(v, state["nets"]["G"][k])
    step5 = load_generator(tmp_path / "checkpoints" / "step_00000005", "sr")
    assert step5(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match=re.escape(str(final_dir)) + r": holds an SR generator"):
        load_generator(final_dir, "degradation")
    with pytest.raises(ValueError, match=r"trained for x4, not x2"):
        load_generator(final_dir, "sr", scale=2)


def test_gan_phase_starts_from_the_pretrained_generator(dirs: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_config(dirs, pretrain={"iters": 3}, gan={"iters": 2, "pixel_weight": 0.5})
    train_sr(cfg, LocalContext(tmp_path / "pre"), "pretrain")
    pre = load_state(tmp_path / "pre" / "final")["nets"]["G"]

    seen: dict[str, torch.Tensor] = {}
    original = SRStep.__call__

    def spy(self: SRStep, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        if not seen:
            seen.update({k: v.clone() for k, v in self.G.state_dict().items()})
        return original(self, lr, hr)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SRStep, "__call__", spy)
        ctx = LocalContext(tmp_path / "gan")
        final = train_sr(cfg, ctx, "gan", init_from=tmp_path / "pre" / "final")
    assert all(torch.equal(seen[k], pre[k]) for k in pre)
    assert {"loss/content", "loss/adv", "loss/pixel", "loss/d_real", "loss/d_fake", "loss/g_total"} <= set(
        final
    )
    assert final["loss/pixel"] > 0
    state = load_state(tmp_path / "gan" / "final")
    assert state["stage"] == "gan" and set(state["nets"]) == set(state["optimizers"]) == {"G", "D"}
    assert not all(torch.equal(state["nets"]["G"][k], pre[k]) for k in pre), "the GAN phase trained G"


def test_gan_phase_with_random_vgg_records_it(dirs: dict[str, Path], tmp_path: Path) -> None:
    raw = tiny_config(dirs, gan={"iters": 1, "content": {"type": "vgg"}}).model_dump(mode="json")
    raw["weights"]["random_vgg"] = True
    final = train_sr(validate_config(raw), LocalContext(tmp_path), "gan")
    assert final["weights"] == "vgg19:random-init (explicit)"


def test_init_from_must_match_the_model(dirs: dict[str, Path], tmp_path: Path) -> None:
    train_sr(tiny_config(dirs, pretrain={"iters": 1}), LocalContext(tmp_path / "pre"), "pretrain")
    bigger = tiny_config(dirs, generator={"channels": 16})
    with pytest.raises(ValueError, match=r"init_from .*'channels': 8.* is not this run's .*'channels': 16"):
        train_sr(bigger, LocalContext(tmp_path / "gan"), "gan", init_from=tmp_path / "pre" / "final")


def test_mix_prob_and_cyclegan_generator_must_agree(dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CycleGAN generator"):
        train_sr(tiny_config(dirs, mix_prob=0.5), LocalContext(tmp_path), "pretrain")
    with pytest.raises(ValueError, match="mix_prob is 0"):
        train_sr(tiny_config(dirs), LocalContext(tmp_path), "pretrain", cyclegan_g=tmp_path)


def test_gan_phase_needs_patches_divisible_by_16(dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sr.patch_size \(24\)"):
        train_sr(tiny_config(dirs, patch_size=24), LocalContext(tmp_path), "gan")


def test_training_with_p1_feeds_every_sample_through_the_cyclegan(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csrgan.train.srgan as sr_module

    loaded: list[tuple[Path, str, Any]] = []
    g = CountingG()

    def fake_load_generator(
        path: Path, role: str, device: Any = "cpu", scale: int | None = None
    ) -> Callable[..., Any]:
        loaded.append((Path(path), role, scale))
        return g

    monkeypatch.setattr(sr_module, "load_generator", fake_load_generator)
    cfg = tiny_config(dirs, mix_prob=1.0, pretrain={"iters": 5})
    final = train_sr(cfg, LocalContext(tmp_path), "pretrain", cyclegan_g=tmp_path / "cg")
    assert loaded == [(tmp_path / "cg", "degradation", SCALE)]
    assert g.samples == 5 * 2 and final["mix/g_fraction"] == 1.0


def test_amp_on_cpu_is_an_error_not_a_silent_fallback(dirs: dict[str, Path], tmp_path: Path) -> None:
    raw = tiny_config(dirs, pretrain={"iters": 2}).model_dump(mode="json")
    raw["resources"].update(amp=True, channels_last=True)
    ctx = LocalContext(tmp_path)
    with pytest.raises(ValueError, match="resources.amp"):
        train_sr(validate_config(raw), ctx, "pretrain")
    assert ctx.reports == [] and not (tmp_path / "final").exists()


def test_channels_last_trains_in_float32_on_cpu(dirs: dict[str, Path], tmp_path: Path) -> None:
    raw = tiny_config(dirs, pretrain={"iters": 2}).model_dump(mode="json")
    raw["resources"].update(channels_last=True)
    final = train_sr(validate_config(raw), LocalContext(tmp_path), "pretrain")
    assert final["diverged"] == 0
    state, _ = read_generator(tmp_path / "final")
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


def test_zero_iterations_skip_the_phase(dirs: dict[str, Path], tmp_path: Path) -> None:
    ctx = LocalContext(tmp_path)
    assert train_sr(tiny_config(dirs, pretrain={"iters": 0}), ctx, "pretrain")["skipped"] == 1
    assert ctx.reports == [] and not (tmp_path / "final").exists()


def test_threads_per_worker_is_applied_and_restored(dirs: dict[str, Path], tmp_path: Path) -> None:
    before = torch.get_num_threads()
    seen = []
    original = SRStep.__call__

    def spy(self: SRStep, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(torch.get_num_threads())
        return original(self, lr, hr)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SRStep, "__call__", spy)
        train_sr(tiny_config(dirs, pretrain={"iters": 1}), LocalContext(tmp_path), "pretrain")
    assert seen == [1] and torch.get_num_threads() == before


# ----------------------------------------------------------------------------------------- divergence
def test_huge_learning_rate_reports_diverged_and_returns(dirs: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_config(dirs, pretrain={"iters": 50, "lr": 1e30}, checkpoint_every=2)
    ctx = LocalContext(tmp_path)
    result = train_sr(cfg, ctx, "pretrain")
    assert result["diverged"] == 1 and result["step"] < 50
    assert ctx.reports[-1]["diverged"] == 1 and "checkpoint" not in ctx.reports[-1]
    assert not (tmp_path / "final").exists()


def test_nan_loss_in_the_gan_phase_reports_diverged(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SRStep.__call__
    calls = {"n": 0}

    def poisoned(self: SRStep, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        out = original(self, lr, hr)
        calls["n"] += 1
        if calls["n"] == 3:
            out["adv"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(SRStep, "__call__", poisoned)
    ctx = LocalContext(tmp_path)
    result = train_sr(tiny_config(dirs, gan={"iters": 10}), ctx, "gan")
    assert result["diverged"] == 1 and result["step"] == 3 and result["phase"] == "gan"
    assert [r["diverged"] for r in ctx.reports] == [1]


def test_sr_step_gan_phase_leaves_discriminator_trainable() -> None:
    """The generator update freezes D only temporarily (D's own update needs its gradients)."""
    from csrgan.losses import GANLoss
    from csrgan.models.srgan import SRGANDiscriminator, SRResNet

    torch.manual_seed(0)
    G, D = SRResNet(channels=8, n_blocks=1), SRGANDiscriminator(channels=8, patch_size=32)
    d_before = [p.clone() for p in D.parameters()]
    step = SRStep(
        "gan",
        G,
        torch.optim.Adam(G.parameters()),
        nn.functional.mse_loss,
        discriminator=D,
        opt_d=torch.optim.Adam(D.parameters()),
        content_loss=nn.MSELoss(),
        gan_loss=GANLoss(),
    )
    losses = step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32))
    assert all(p.requires_grad for p in D.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters(), strict=True))
    assert set(losses) == {"g_total", "content", "adv", "pixel", "d_real", "d_fake"}


def test_sr_step_bf16_autocast_path_runs() -> None:
    """The trainer only enables bf16 on CUDA; the autocast code path itself is exercised here on CPU."""
    from csrgan.losses import GANLoss
    from csrgan.models.srgan import SRGANDiscriminator, SRResNet

    torch.manual_seed(0)
    G, D = SRResNet(channels=8, n_blocks=1), SRGANDiscriminator(channels=8, patch_size=32)
    step = SRStep(
        "gan",
        G,
        torch.optim.Adam(G.parameters()),
        nn.functional.mse_loss,
        discriminator=D,
        opt_d=torch.optim.Adam(D.parameters()),
        content_loss=nn.MSELoss(),
        gan_loss=GANLoss(),
        pixel_weight=1.0,
        amp_dtype=torch.bfloat16,
        channels_last=True,
    )
    losses = step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert all(p.dtype == torch.float32 for p in G.parameters())  # master weights stay fp32


def test_training_with_a_real_cyclegan_artefact(dirs: dict[str, Path], tmp_path: Path) -> None:
    """Integration with the CycleGAN stage's final/ artefact (csrgan.models.artifacts.save_generator with
    csrgan.train.cyclegan.generator_spec)."""
    from csrgan.models.artifacts import save_generator
    from csrgan.models.cyclegan import ResnetGenerator
    from csrgan.train import cyclegan as cg

    raw = tiny_config(dirs, mix_prob=0.5, pretrain={"iters": 6}, eval_every=3).model_dump(mode="json")
    raw["cyclegan"]["generator"] = {"ngf": 8, "n_blocks": 1}
    cfg = validate_config(raw)
    torch.manual_seed(0)
    save_generator(tmp_path / "cg", ResnetGenerator(ngf=8, n_blocks=1), cg.generator_spec(cfg))
    ctx = LocalContext(tmp_path / "run")
    train_sr(cfg, ctx, "pretrain", cyclegan_g=tmp_path / "cg")
    fractions = [r["mix/g_fraction"] for r in ctx.reports]  # 6 samples per report
    assert 0 < sum(fractions) / len(fractions) < 1, fractions
