"""Spec of the SR trainer (csrgan.train.srgan): LR mixing, the two phases, events, artefacts, divergence."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torch import nn

from csrgan.config import ExperimentConfig, validate_config
from csrgan.data.datasets import PairedPatchDataset
from csrgan.data.io import write_image
from csrgan.models.artifacts import load_generator, read_generator
from csrgan.train.checkpoint import load_state
from csrgan.train.context import LocalContext
from csrgan.train.srgan import SRStep, generator_spec, train_sr

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
    for i in range(2):  # an unpaired "real" LR domain for the degradation stage (noisy 24 px crops)
        crop = cat[200 + 24 * i : 224 + 24 * i, 200:224].astype(float)
        noisy = crop + np.random.default_rng(i).normal(0, 8, crop.shape)
        write_image(root / "real" / f"r{i}.png", np.clip(noisy, 0, 255).round().astype(np.uint8))
    return {"train": root / "train", "test": root / "test", "real": root / "real"}


def tiny_config(dirs: dict[str, Path], **sr: Any) -> ExperimentConfig:
    """channels 8, 1 block, 32 px HR patches, batch 2, 1 thread; extra ``sr`` keys merged in."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data": {
            "train_hr": str(dirs["train"]),
            "real_lr": str(dirs["real"]),
            "scale": SCALE,
            "test_sets": [],
        },
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


# --------------------------------------------------------------------------------------- LR mixing
# The per-sample choice of the training LR lives in the dataset (PairedPatchDataset(alt=..., mix_prob=p)):
# bicubic LR, or w.p. p the alternative source's LR at the same position and with the same flips.
def _u8(t: torch.Tensor) -> torch.Tensor:
    return (t * 255).round().to(torch.uint8)


class HalvingAlt:
    """An AltLR stand-in: records its calls and returns the bicubic LR patch at (top, left) halved."""

    id = "halving"

    def __init__(self, bicubic: PairedPatchDataset) -> None:
        self.bicubic = bicubic
        self.calls: list[tuple[int, int, int, int]] = []

    def patch(
        self,
        k: int,
        top: int,
        left: int,
        side: int,
        hr_patch: np.ndarray,
        rng: np.random.Generator,
        lr_shape: tuple[int, int],
    ) -> np.ndarray:
        assert hr_patch.shape == (side * SCALE, side * SCALE, 3)  # the aligned HR patch, before flips
        assert lr_shape == self.bicubic.pair(k)[0].shape[:2]  # the whole LR image's size
        self.calls.append((k, top, left, side))
        return self.bicubic.pair(k)[0][top : top + side, left : left + side] // 2


class ForbiddenAlt:
    id = "forbidden"

    def patch(self, *args: Any) -> np.ndarray:
        raise AssertionError("the alternative LR must not be used when mix_prob == 0")


def _patches(dirs: dict[str, Path], length: int = 64, seed: int = 0, **kw: Any) -> PairedPatchDataset:
    return PairedPatchDataset(
        dirs["train"], scale=SCALE, patch_size=32, cache=True, length=length, seed=seed, **kw
    )


def test_p0_never_uses_the_alternative_lr(dirs: dict[str, Path]) -> None:
    plain, ds = _patches(dirs), _patches(dirs, alt=ForbiddenAlt(), mix_prob=0.0)
    for epoch in range(3):
        plain.set_epoch(epoch)
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item, ref = ds[i], plain[i]
            assert item["alt"] is False and ref["alt"] is False
            assert torch.equal(item["lr"], ref["lr"]) and torch.equal(item["hr"], ref["hr"])


def test_p1_uses_the_alternative_for_every_sample_at_the_same_position_and_flips(
    dirs: dict[str, Path],
) -> None:
    plain = _patches(dirs)
    alt = HalvingAlt(plain)
    ds = _patches(dirs, alt=alt, mix_prob=1.0)
    for epoch in range(3):
        plain.set_epoch(epoch)
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item, ref = ds[i], plain[i]
            assert item["alt"] is True
            assert torch.equal(item["hr"], ref["hr"])  # the HR patch does not depend on p
            assert torch.equal(_u8(item["lr"]), _u8(ref["lr"]) // 2)  # same crop, same flips, alt's pixels
    assert len(alt.calls) == 3 * len(ds)


def test_p_half_is_a_fair_per_sample_coin_and_alt_sees_only_the_chosen(dirs: dict[str, Path]) -> None:
    plain = _patches(dirs, length=4000, seed=3)
    alt = HalvingAlt(plain)
    ds = _patches(dirs, length=4000, seed=3, alt=alt, mix_prob=0.5)
    chosen = 0
    for i in range(len(ds)):
        item, ref = ds[i], plain[i]
        chosen += item["alt"]
        want = _u8(ref["lr"]) // 2 if item["alt"] else _u8(ref["lr"])
        assert torch.equal(_u8(item["lr"]), want)
    assert len(alt.calls) == chosen
    # 4000 draws: sd of the fraction is 0.0079 -> +-0.03 is ~4 sd
    assert abs(chosen / 4000 - 0.5) < 0.03


def test_draws_depend_only_on_seed_epoch_and_index(dirs: dict[str, Path]) -> None:
    def draws(ds: PairedPatchDataset, order: range | list[int]) -> dict[int, tuple[bool, torch.Tensor]]:
        return {i: (ds[i]["alt"], ds[i]["lr"]) for i in order}

    plain = _patches(dirs, length=200, seed=7)
    make = lambda seed: _patches(dirs, length=200, seed=seed, alt=HalvingAlt(plain), mix_prob=0.5)  # noqa: E731
    a, b = make(7), make(7)
    first = draws(a, range(200))
    again = draws(b, list(reversed(range(200))))  # any access order, any history: the same samples
    assert all(first[i][0] == again[i][0] and torch.equal(first[i][1], again[i][1]) for i in range(200))
    mask = [first[i][0] for i in range(200)]
    b.set_epoch(1)
    assert [b[i]["alt"] for i in range(200)] != mask, "another epoch draws again"
    b.set_epoch(0)
    assert [b[i]["alt"] for i in range(200)] == mask, "and epoch 0 is epoch 0 again"
    assert [make(8)[i]["alt"] for i in range(200)] != mask, "another seed draws differently"


def test_draws_are_coupled_across_p(dirs: dict[str, Path]) -> None:
    """Same seed, larger p: the alt samples of the smaller p are a subset (cleaner p ablations), and the
    crops and flips do not depend on p at all."""
    plain = _patches(dirs, length=500)
    low = _patches(dirs, length=500, alt=HalvingAlt(plain), mix_prob=0.3)
    high = _patches(dirs, length=500, alt=HalvingAlt(plain), mix_prob=0.6)
    lo, hi = [low[i] for i in range(500)], [high[i] for i in range(500)]
    lo_mask = np.array([x["alt"] for x in lo])
    hi_mask = np.array([x["alt"] for x in hi])
    assert not (lo_mask & ~hi_mask).any() and hi_mask.sum() > lo_mask.sum()
    assert all(torch.equal(x["hr"], y["hr"]) for x, y in zip(lo, hi, strict=True))


def test_mixing_needs_an_alternative_when_p_positive(dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="needs an alternative LR source"):
        _patches(dirs, mix_prob=0.2)
    with pytest.raises(ValueError, match=r"mix_prob must be in \[0, 1\]"):
        _patches(dirs, alt=ForbiddenAlt(), mix_prob=1.5)


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
    with pytest.raises(
        ValueError, match=r"lr_source 'cyclegan': the degradation stage \(cyclegan_g\) is required"
    ):
        train_sr(tiny_config(dirs, mix_prob=0.5), LocalContext(tmp_path), "pretrain")
    with pytest.raises(
        ValueError, match="mix_prob=0, sr.lr_source='cyclegan' does not use the degradation stage"
    ):
        train_sr(tiny_config(dirs), LocalContext(tmp_path), "pretrain", cyclegan_g=tmp_path)
    pipe = tiny_config(dirs, mix_prob=1.0, lr_source="pipeline")
    with pytest.raises(ValueError, match="sr.lr_source='pipeline' does not use the degradation stage"):
        train_sr(pipe, LocalContext(tmp_path), "pretrain", cyclegan_g=tmp_path)
    assert not (tmp_path / "final").exists()


def test_gan_phase_needs_patches_divisible_by_16(dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sr.patch_size \(24\)"):
        train_sr(tiny_config(dirs, patch_size=24), LocalContext(tmp_path), "gan")


def _degradation_cfg(dirs: dict[str, Path], **sr: Any) -> ExperimentConfig:
    """``tiny_config`` with a tiny residual degradation G (frequency-separation learner)."""
    raw = tiny_config(dirs, **sr).model_dump(mode="json")
    raw["cyclegan"].update(
        generator={"type": "residual", "nf": 4, "n_blocks": 1, "noise_channels": 1},
        discriminator={"type": "dsgan", "ndf": 4},
        iters=2, batch_size=1, patch_size=8, cache_variants=2, eval_every=1000, checkpoint_every=1000,
    )  # fmt: skip
    return validate_config(raw)


def test_training_with_p1_reads_every_lr_from_the_stage_cache_and_never_runs_g(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-made degradation artefact whose cached LR is the bicubic LR halved: every LR the SR network
    sees at p = 1 is one of those (<= 127/255), and G itself is never run by the SR stage."""
    from csrgan.models.artifacts import save_generator
    from csrgan.models.dsgan import ResidualDegradationGenerator
    from csrgan.train import degradation as deg

    cfg = _degradation_cfg(dirs, mix_prob=1.0, pretrain={"iters": 5})
    final = tmp_path / "cg" / "final"
    torch.manual_seed(0)
    save_generator(
        final, ResidualDegradationGenerator(nf=4, n_blocks=1, noise_channels=1), deg.generator_spec(cfg)
    )
    bicubic = PairedPatchDataset(dirs["train"], scale=SCALE, patch_size=32)
    for k, hr in enumerate(sorted(dirs["train"].iterdir())):
        write_image(final / "lr" / "0" / hr.name, bicubic.pair(k)[0] // 2)

    def no_g(*a: Any, **k: Any) -> torch.Tensor:
        raise AssertionError("the SR stage must not run the degradation G")

    monkeypatch.setattr(ResidualDegradationGenerator, "forward", no_g)
    seen: list[torch.Tensor] = []
    original = SRStep.__call__

    def spy(self: SRStep, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(lr.clone())
        return original(self, lr, hr)

    monkeypatch.setattr(SRStep, "__call__", spy)
    result = train_sr(cfg, LocalContext(tmp_path / "run"), "pretrain", cyclegan_g=final)
    assert result["mix/g_fraction"] == 1.0 and len(seen) == 5
    assert all(float(lr.max()) <= 127 / 255 + 1e-6 for lr in seen)
    assert max(float(bicubic[i]["lr"].max()) for i in range(4)) > 0.6  # bicubic LR would not pass that

    with pytest.raises(FileNotFoundError, match=r"no cached real-like LR"):  # an artefact without lr/
        (tmp_path / "bare").mkdir()
        for name in ("generator.pt", "generator.json"):
            (tmp_path / "bare" / name).write_bytes((final / name).read_bytes())
        train_sr(cfg, LocalContext(tmp_path / "run2"), "pretrain", cyclegan_g=tmp_path / "bare")
    x2 = validate_config(
        {**cfg.model_dump(mode="json"), "data": {**cfg.data.model_dump(mode="json"), "scale": 2}}
    )
    with pytest.raises(ValueError, match=r"trained for x4, not x2"):  # a degradation of another scale
        train_sr(x2, LocalContext(tmp_path / "run3"), "pretrain", cyclegan_g=final)


def test_amp_on_cpu_when_asked_trains_with_bf16_autocast(dirs: dict[str, Path], tmp_path: Path) -> None:
    raw = tiny_config(dirs, pretrain={"iters": 2}).model_dump(mode="json")
    raw["resources"].update(amp=True, channels_last=True)  # explicit: honoured on CPU too (slower there)
    ctx = LocalContext(tmp_path)
    final = train_sr(validate_config(raw), ctx, "pretrain")
    assert final["diverged"] == 0 and np.isfinite(final["loss/pixel"])
    assert [(r["setting/amp"], r["setting/channels_last"]) for r in ctx.reports] == [(True, True)]
    state, _ = read_generator(tmp_path / "final")
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


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


def test_training_with_a_real_degradation_stage(dirs: dict[str, Path], tmp_path: Path) -> None:
    """Integration with the degradation stage's final/ (the real frequency-separation stage at tiny
    size: G, and its cached G(bicubic LR) in cache_variants folders)."""
    from csrgan.train.dsgan import train_dsgan

    cfg = _degradation_cfg(dirs, mix_prob=0.5, pretrain={"iters": 6}, eval_every=3)
    stage = LocalContext(tmp_path / "cg")
    train_dsgan(cfg, stage)
    final = stage.out_dir / "final"
    assert sorted(p.name for p in (final / "lr").iterdir()) == ["0", "1"]
    ctx = LocalContext(tmp_path / "run")
    train_sr(cfg, ctx, "pretrain", cyclegan_g=final)
    fractions = [r["mix/g_fraction"] for r in ctx.reports]  # 6 samples per report
    assert 0 < sum(fractions) / len(fractions) < 1, fractions
