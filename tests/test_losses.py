"""Spec for csrgan.losses: pixel, VGG content, adversarial, cycle/identity losses and the ImagePool.

VGG tests use randomly initialised VGG19 features (no pretrained weights offline). Most install a
stand-in ``load_vgg19_features`` so they test this module alone and record what it was asked for;
one test uses the real :mod:`csrgan.weights` loader (``random_init=True``) where it is importable.
"""

from __future__ import annotations

import importlib
import io
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from csrgan import registry
from csrgan.losses import (
    GAN_LOSSES,
    LOSSES,
    VGG19_LAYERS,
    GANLoss,
    ImagePool,
    VGGContentLoss,
    cycle_loss,
    identity_loss,
    vgg19_layer_index,
)
from csrgan.registry import RegistryError

# --------------------------------------------------------------------------------------------- registry


def test_losses_registry_names_what_yaml_can_ask_for() -> None:
    assert LOSSES is registry.LOSSES and GAN_LOSSES is registry.GAN_LOSSES
    assert {"mse", "l1", "vgg"} <= set(LOSSES.names())
    assert "gan" not in LOSSES  # adversarial losses have their own registry
    assert LOSSES.get("vgg") is VGGContentLoss
    assert isinstance(LOSSES.build("mse"), nn.MSELoss)
    assert isinstance(LOSSES.build("l1"), nn.L1Loss)
    with pytest.raises(RegistryError, match="unknown loss 'perceptual'; known: .*vgg"):
        LOSSES.get("perceptual")


def test_gan_losses_registry_builds_each_mode() -> None:
    assert {"vanilla", "lsgan"} <= set(GAN_LOSSES.names())
    for mode in ("vanilla", "lsgan"):
        loss = GAN_LOSSES.build(mode)
        assert isinstance(loss, GANLoss) and loss.mode == mode
    with pytest.raises(RegistryError, match="unknown GAN loss 'wgan'; known: .*lsgan"):
        GAN_LOSSES.get("wgan")


def test_loss_arguments_are_validated_against_the_constructor() -> None:
    """Pixel losses take no arguments; VGG's weights arguments are injected by csrgan, not YAML."""
    assert LOSSES.validate("mse", {}) == {}
    with pytest.raises(RegistryError, match="'mse' has no argument"):
        LOSSES.validate("mse", {"layer": "relu5_4"})
    assert LOSSES.validate("vgg", {"layer": "relu2_2"}) == {
        "layer": "relu2_2",
        "criterion": "mse",
        "feature_scale": 1.0,
    }
    with pytest.raises(RegistryError, match="set by csrgan"):
        LOSSES.validate("vgg", {"random_init": True})


# ------------------------------------------------------------------------------------------ VGG layers


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("conv1_1", 0),
        ("relu1_2", 3),
        ("pool1", 4),
        ("relu2_2", 8),
        ("conv5_4", 34),
        ("relu5_4", 35),
        ("pool5", 36),
    ],
)
def test_vgg19_layer_names_map_to_torchvision_feature_indices(name: str, index: int) -> None:
    assert vgg19_layer_index(name) == index


def test_vgg19_layer_names_match_torchvision_module_types() -> None:
    features = make_layers(cfgs["E"])  # = torchvision.models.vgg19().features
    assert len(features) == len(VGG19_LAYERS) == 37
    kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    for module, name in zip(features, VGG19_LAYERS, strict=True):
        assert isinstance(module, kinds[name[:4]]), name


def test_unknown_vgg_layer_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown VGG19 layer 'relu6_1'; known: conv1_1, relu1_1"):
        vgg19_layer_index("relu6_1")


# ---------------------------------------------------------------------------------------- VGG content


class StandInLoader:
    """Records calls; returns randomly initialised VGG19 features like the weights module would."""

    def __init__(self, features: nn.Module | None = None) -> None:
        self.calls: list[tuple[Any, bool]] = []
        self.features = features

    def __call__(self, source: str | Path | None = None, random_init: bool = False) -> tuple[nn.Module, str]:
        self.calls.append((source, random_init))
        if not random_init:
            raise AssertionError("tests have no pretrained weights: ask for random_init=True")
        torch.manual_seed(0)
        return (self.features or make_layers(cfgs["E"])), "vgg19 features: random init (test stand-in)"


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> StandInLoader:
    """Install the stand-in as ``csrgan.weights.load_vgg19_features`` (whether or not weights.py exists)."""
    stand_in = StandInLoader()
    try:
        weights = importlib.import_module("csrgan.weights")
    except ImportError:
        weights = types.ModuleType("csrgan.weights")
        monkeypatch.setitem(sys.modules, "csrgan.weights", weights)
    monkeypatch.setattr(weights, "load_vgg19_features", stand_in, raising=False)
    return stand_in


def test_vgg_loss_passes_source_and_random_init_through_and_exposes_provenance(loader: StandInLoader) -> None:
    loss = VGGContentLoss(weights_source="/some/vgg19.pth", random_init=True)
    assert loader.calls == [("/some/vgg19.pth", True)]
    assert loss.provenance == "vgg19 features: random init (test stand-in)"


@pytest.mark.parametrize(
    ("layer", "n_modules", "last"), [("relu5_4", 36, nn.ReLU), ("conv5_4", 35, nn.Conv2d)]
)
def test_vgg_loss_truncates_after_the_named_layer(
    loader: StandInLoader, layer: str, n_modules: int, last: type[nn.Module]
) -> None:
    loss = VGGContentLoss(layer=layer, random_init=True)
    assert len(loss.features) == n_modules
    assert isinstance(loss.features[-1], last)


def test_vgg_loss_carries_gradient_to_the_sr_image_only(loader: StandInLoader) -> None:
    loss_fn = VGGContentLoss(layer="relu2_2", random_init=True)
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    hr = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss = loss_fn(sr, hr)
    assert loss.item() > 0
    loss.backward()
    assert sr.grad is not None and torch.count_nonzero(sr.grad) > 0
    assert hr.grad is None  # the target is not differentiated
    assert all(not p.requires_grad and p.grad is None for p in loss_fn.parameters())


def test_vgg_loss_of_identical_images_is_zero(loader: StandInLoader) -> None:
    loss_fn = VGGContentLoss(random_init=True)
    x = torch.rand(1, 3, 48, 48)
    assert loss_fn(x, x.clone()).item() == 0.0


def test_vgg_loss_normalises_with_imagenet_statistics(loader: StandInLoader) -> None:
    loss_fn = VGGContentLoss(layer="relu1_2", random_init=True)
    x = torch.rand(1, 3, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(loss_fn.extract(x), loss_fn.features((x - mean) / std))


def test_vgg_feature_scale_scales_features(loader: StandInLoader) -> None:
    """The paper's 1/12.75 on the features is 1/12.75**2 on an MSE loss and 1/12.75 on an L1 loss."""
    sr, hr = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    s = 1 / 12.75
    for criterion, power in (("mse", 2), ("l1", 1)):
        base = VGGContentLoss(layer="relu3_4", random_init=True, criterion=criterion)(sr, hr)
        scaled = VGGContentLoss(layer="relu3_4", random_init=True, criterion=criterion, feature_scale=s)(
            sr, hr
        )
        assert math.isclose(scaled.item(), base.item() * s**power, rel_tol=1e-4)


def test_vgg_loss_stays_in_eval_mode(loader: StandInLoader) -> None:
    loss_fn = VGGContentLoss(random_init=True).train()
    assert loss_fn.training and not loss_fn.features.training


def test_vgg_loss_rejects_a_module_that_is_not_vgg19_features(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = StandInLoader(features=make_layers(cfgs["D"]))  # VGG16
    try:
        weights = importlib.import_module("csrgan.weights")
    except ImportError:
        weights = types.ModuleType("csrgan.weights")
        monkeypatch.setitem(sys.modules, "csrgan.weights", weights)
    monkeypatch.setattr(weights, "load_vgg19_features", stand_in, raising=False)
    with pytest.raises(TypeError, match=r"from /x/vgg16\.pth is not torchvision's vgg19\(\)\.features"):
        VGGContentLoss(weights_source="/x/vgg16.pth", random_init=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": "fc7"}, "unknown VGG19 layer 'fc7'"),
        ({"criterion": "huber"}, "criterion must be 'mse' or 'l1'"),
        ({"feature_scale": 0.0}, "feature_scale must be > 0"),
    ],
)
def test_vgg_loss_rejects_bad_config(loader: StandInLoader, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VGGContentLoss(random_init=True, **kwargs)
    assert loader.calls == []  # validated before any weights are loaded


def test_vgg_loss_with_the_real_weights_module_and_explicit_random_init() -> None:
    loss_fn = VGGContentLoss(random_init=True)
    assert "random" in loss_fn.provenance.lower()
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss_fn(sr, torch.rand(1, 3, 32, 32)).backward()
    assert torch.count_nonzero(sr.grad) > 0


# --------------------------------------------------------------------------------------------- GANLoss


def test_vanilla_gan_loss_is_bce_with_logits() -> None:
    loss = GANLoss("vanilla")
    zeros = torch.zeros(4, 1)
    assert math.isclose(loss(zeros, True).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(loss(zeros, False).item(), math.log(2), rel_tol=1e-6)
    logits = torch.tensor([[2.0], [-1.0]])
    # -log(sigmoid(z)) = log(1 + e^-z) for real; -log(1 - sigmoid(z)) = log(1 + e^z) for fake
    real = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    fake = (math.log1p(math.exp(2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert math.isclose(loss(logits, True).item(), real, rel_tol=1e-6)
    assert math.isclose(loss(logits, False).item(), fake, rel_tol=1e-6)
    assert loss(torch.full((2, 1), 30.0), True).item() < 1e-10  # stable: no log(0)


def test_lsgan_loss_is_mse_to_1_or_0_on_patch_maps() -> None:
    loss = GANLoss("lsgan")
    logits = torch.tensor([0.5, -1.0]).view(1, 1, 1, 2)
    assert math.isclose(loss(logits, True).item(), (0.25 + 4.0) / 2, rel_tol=1e-6)
    assert math.isclose(loss(logits, False).item(), (0.25 + 1.0) / 2, rel_tol=1e-6)


def test_gan_loss_gradient_pushes_generator_logits_towards_real() -> None:
    logits = torch.zeros(3, 1, requires_grad=True)
    GANLoss("vanilla")(logits, True).backward()
    assert torch.all(logits.grad < 0)  # gradient descent raises D(G(z))


def test_gan_loss_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode must be 'vanilla' or 'lsgan', got 'wgan'"):
        GANLoss("wgan")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- cycle and identity


def test_cycle_and_identity_losses_are_mean_absolute_error() -> None:
    a = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    b = torch.tensor([0.25, 0.5, 0.0]).view(1, 1, 1, 3)
    assert math.isclose(cycle_loss(a, b).item(), 1.25 / 3, rel_tol=1e-6)
    assert math.isclose(identity_loss(a, b).item(), 1.25 / 3, rel_tol=1e-6)
    assert cycle_loss(a, a).item() == 0.0


# -------------------------------------------------------------------------------------------- ImagePool


def labelled(*labels: float) -> torch.Tensor:
    """A batch of constant 1x2x2 images whose value is their label."""
    return torch.tensor(labels, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def labels_of(batch: torch.Tensor) -> list[float]:
    return batch[:, 0, 0, 0].tolist()


def test_image_pool_returns_inputs_while_filling() -> None:
    pool = ImagePool(4, generator=torch.Generator().manual_seed(0))
    assert labels_of(pool.query(labelled(0, 1, 2))) == [0, 1, 2]
    assert len(pool) == 3
    assert labels_of(pool.query(labelled(3))) == [3]
    assert len(pool) == 4


def test_image_pool_returns_a_mix_of_current_and_past_images() -> None:
    pool = ImagePool(4, generator=torch.Generator().manual_seed(0))
    pool.query(labelled(0, 1, 2, 3))
    new = list(range(100, 140))
    out = labels_of(pool.query(labelled(*new)))
    kept = sum(o == n for o, n in zip(out, new, strict=True))
    assert 8 <= kept <= 32  # each is swapped with probability 1/2
    assert any(o < 100 for o in out)  # images from before this batch come back
    assert len(pool) == 4
    pooled = set(labels_of(torch.cat(pool.images)))
    assert pooled <= set(new) | {0, 1, 2, 3}


def test_image_pool_of_size_zero_is_a_no_op() -> None:
    pool = ImagePool(0, generator=torch.Generator().manual_seed(0))
    x = labelled(1, 2)
    assert pool.query(x) is x


def test_image_pool_uses_only_its_own_generator() -> None:
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    outs = []
    for _ in range(2):
        pool = ImagePool(2, generator=torch.Generator().manual_seed(7))
        outs.append(torch.cat([pool.query(labelled(i, i + 0.5)) for i in range(10)]))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(torch.get_rng_state(), global_state)


def test_image_pool_state_round_trips_for_bit_exact_resume() -> None:
    batches = [torch.rand(3, 3, 4, 4) for _ in range(8)]
    a = ImagePool(5, generator=torch.Generator().manual_seed(1))
    for b in batches[:4]:
        a.query(b)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    expected = [a.query(b) for b in batches[4:]]

    fresh = ImagePool(5, generator=torch.Generator().manual_seed(99))
    diverged = [fresh.query(b) for b in batches[4:]]
    assert not all(torch.equal(x, y) for x, y in zip(diverged, expected, strict=True))

    buffer.seek(0)
    resumed = ImagePool(5, generator=torch.Generator().manual_seed(99))
    resumed.load_state_dict(torch.load(buffer))
    assert all(torch.equal(resumed.query(b), e) for b, e in zip(batches[4:], expected, strict=True))


def test_image_pool_stores_detached_copies() -> None:
    pool = ImagePool(2, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 2, 2, requires_grad=True)
    out = pool.query(x * 2)
    assert not out.requires_grad
    assert all(not img.requires_grad for img in pool.images)


def test_image_pool_rejects_bad_arguments_and_mismatched_state() -> None:
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        ImagePool(4, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be an integer >= 0"):
        ImagePool(-1, generator=torch.Generator())
    state = ImagePool(4, generator=torch.Generator()).state_dict()
    with pytest.raises(ValueError, match="pool size 8 != saved size 4"):
        ImagePool(8, generator=torch.Generator()).load_state_dict(state)
    with pytest.raises(KeyError, match="generator_state"):
        ImagePool(4, generator=torch.Generator()).load_state_dict({"size": 4, "images": []})


def test_pixel_losses_from_the_registry_match_torch() -> None:
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert torch.equal(LOSSES.build("mse")(a, b), F.mse_loss(a, b))
    assert torch.equal(LOSSES.build("l1")(a, b), F.l1_loss(a, b))
