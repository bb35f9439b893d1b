"""Spec for csrgan.models: SRGAN (SRResNet + discriminator), CycleGAN (ResNet generator + PatchGAN),
the model registries they fill, and the generator artefact format (csrgan.models.artifacts)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csrgan.models import (
    NLayerDiscriminator,
    ResnetGenerator,
    SRGANDiscriminator,
    SRResNet,
    init_weights,
)
from csrgan.models.artifacts import (
    GENERATOR_CONFIG_FILE,
    GENERATOR_FILE,
    GeneratorSpec,
    build_generator,
    load_generator,
    read_generator,
    save_generator,
)
from csrgan.registry import (
    DEGRADATION_CRITICS,
    DEGRADATION_GENERATORS,
    SR_DISCRIMINATORS,
    SR_GENERATORS,
    RegistryError,
)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------------------------- SRResNet


@pytest.mark.parametrize(("h", "w"), [(24, 24), (17, 31), (6, 5)])
def test_srresnet_x4_output_is_exactly_four_times_the_input(h: int, w: int) -> None:
    net = SRResNet(channels=8, n_blocks=1)
    out = net(torch.rand(2, 3, h, w))
    assert out.shape == (2, 3, 4 * h, 4 * w)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_srresnet_scale_is_a_power_of_two_with_one_pixelshuffle_per_octave(scale: int) -> None:
    net = SRResNet(channels=8, n_blocks=1, scale=scale)
    assert len(net.upsample) == int(math.log2(scale))
    assert net(torch.rand(1, 3, 10, 12)).shape == (1, 3, 10 * scale, 12 * scale)


@pytest.mark.parametrize("scale", [3, 6, 0, 1, -4, 4.0, True])
def test_srresnet_rejects_scales_that_are_not_powers_of_two(scale: object) -> None:
    with pytest.raises(ValueError, match="power of 2"):
        SRResNet(scale=scale)  # type: ignore[arg-type]


def test_srresnet_paper_size_has_the_literature_parameter_count() -> None:
    """SRResNet (B=16, 64 channels, x4) has ~1.55 M parameters (Ledig et al. 2017; EDSR's Table 1: 1.5 M).

    Exact count with one-slope PReLUs: head 9*9*3*64+64 (+1 PReLU); 16 blocks of two 3x3 convs
    (36,928 each), two BNs (128 each) and a PReLU; post-blocks conv+BN; two upsamplers 3*3*64*256+256
    (+1 PReLU); tail 9*9*64*3+3.
    """
    conv3 = 3 * 3 * 64 * 64 + 64
    expected = (
        (9 * 9 * 3 * 64 + 64 + 1)
        + 16 * (2 * conv3 + 2 * 128 + 1)
        + (conv3 + 128)
        + 2 * (3 * 3 * 64 * 256 + 256 + 1)
        + (9 * 9 * 64 * 3 + 3)
    )
    net = SRResNet()
    assert n_params(net) == expected == 1_549_462
    assert abs(n_params(net) - 1.55e6) / 1.55e6 < 0.01


def test_srresnet_output_is_linear_not_squashed() -> None:
    """The output is not passed through tanh/sigmoid: a large tail bias shows up unchanged."""
    net = SRResNet(channels=8, n_blocks=1).eval()
    with torch.no_grad():
        net.tail.weight.zero_()
        net.tail.bias.fill_(1.7)
    assert torch.allclose(net(torch.rand(1, 3, 8, 8)), torch.full((1, 3, 32, 32), 1.7))


def test_global_bicubic_skip_adds_torch_bicubic_upsampling_of_the_input() -> None:
    net = SRResNet(channels=8, n_blocks=1, global_bicubic_skip=True).eval()
    with torch.no_grad():
        net.tail.weight.zero_()
        net.tail.bias.zero_()
    x = torch.rand(1, 3, 9, 11)
    expected = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(net(x), expected, atol=1e-6)
    plain = SRResNet(channels=8, n_blocks=1, global_bicubic_skip=False).eval()
    with torch.no_grad():
        plain.tail.weight.zero_()
        plain.tail.bias.zero_()
    assert torch.count_nonzero(plain(x)) == 0


def test_tiny_srresnet_overfits_a_single_patch() -> None:
    """Training reduces the loss: 100 Adam steps on one 24->96 patch at least halve the pixel MSE."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    disk = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.05).float()
    hr = torch.stack(
        [
            0.5 + 0.35 * torch.sin(2 * math.pi * (2 * xx + yy)),
            0.3 + 0.5 * disk,
            0.5 + 0.4 * torch.cos(2 * math.pi * 3 * yy) * xx,
        ]
    ).unsqueeze(0)
    lr = F.avg_pool2d(hr, 4)
    net = SRResNet(channels=16, n_blocks=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = F.mse_loss(net(lr), hr)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert lr.shape == (1, 3, 24, 24)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


# ----------------------------------------------------------------------------------- SRGAN discriminator


@pytest.mark.parametrize(("h", "w"), [(24, 24), (32, 32), (96, 96), (40, 56)])
def test_srgan_discriminator_accepts_any_input_size_and_returns_one_logit(h: int, w: int) -> None:
    net = SRGANDiscriminator(channels=8)
    assert net(torch.rand(3, 3, h, w)).shape == (3, 1)


@pytest.mark.parametrize(("patch_size", "grid"), [(96, 6), (40, 3), (128, 8)])
def test_srgan_discriminator_is_the_paper_network_at_its_patch_size(patch_size: int, grid: int) -> None:
    """At the training patch size the conv stack ends on the pooling grid (6x6 for 96 px, as in the
    paper), so the adaptive pooling is the identity; other sizes are pooled onto that grid."""
    net = SRGANDiscriminator(channels=8, patch_size=patch_size).eval()
    x = torch.rand(2, 3, patch_size, patch_size)
    fmap = net.features(x)
    assert fmap.shape == (2, 64, grid, grid)
    assert torch.equal(net.pool(fmap), fmap)
    assert torch.equal(net(x), net.head(fmap))
    assert net.head[1].in_features == 64 * grid * grid


def test_srgan_discriminator_widths_strides_and_norms_follow_the_paper() -> None:
    net = SRGANDiscriminator()  # channels=64
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.features) == 7
    assert not isinstance(net.features[1], nn.BatchNorm2d)  # no BN after the first conv
    linears = [m for m in net.head if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(512 * 36, 1024), (1024, 1)]
    assert all(m.negative_slope == 0.2 for m in net.modules() if isinstance(m, nn.LeakyReLU))


def test_srgan_discriminator_rejects_non_positive_sizes() -> None:
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        SRGANDiscriminator(patch_size=0)


# ------------------------------------------------------------------------------------ CycleGAN generator


@pytest.mark.parametrize(("h", "w"), [(37, 53), (40, 40), (8, 9), (33, 16)])
def test_resnet_generator_keeps_any_input_size(h: int, w: int) -> None:
    net = ResnetGenerator(ngf=8, n_blocks=2)
    out = net(torch.rand(2, 3, h, w))
    assert out.shape == (2, 3, h, w)
    assert out.min() >= 0 and out.max() <= 1  # (tanh + 1) / 2


def test_resnet_generator_default_is_the_junyanz_9_block_network() -> None:
    net = ResnetGenerator()
    convs = [m for m in net.model if isinstance(m, nn.Conv2d)]
    ups = [m for m in net.model if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 3]
    assert [u.out_channels for u in ups] == [128, 64]
    assert all(u.output_padding == (1, 1) and u.stride == (2, 2) for u in ups)
    assert sum(type(m).__name__ == "ResnetBlock" for m in net.model) == 9
    assert isinstance(net.model[-1], nn.Tanh)
    assert n_params(net) == 11_378_179  # junyanz prints "[Network G_A] ... 11.378 M"


def test_resnet_generator_maps_0_1_to_minus1_1_internally() -> None:
    """A network whose last conv outputs a constant c gives (tanh(c) + 1) / 2 in [0, 1] space; and the
    input reaches the first conv as 2x - 1."""
    net = ResnetGenerator(ngf=4, n_blocks=0, n_down=0).eval()
    seen: list[torch.Tensor] = []
    net.model[1].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        net.model[-2].weight.zero_()
        net.model[-2].bias.fill_(0.3)
    x = torch.rand(1, 3, 12, 12)
    out = net(x)
    assert torch.allclose(out, torch.full_like(out, (math.tanh(0.3) + 1) / 2))
    assert torch.allclose(seen[0][..., 3:-3, 3:-3], 2 * x - 1)


def test_resnet_generator_rejects_too_small_inputs_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"needs H, W >= 8, got 7x20"):
        ResnetGenerator(ngf=4, n_blocks=1)(torch.rand(1, 3, 7, 20))


def _symmetrise_kernels(net: nn.Module) -> None:
    """Make every conv / transposed-conv kernel mirror-symmetric in both spatial axes."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                w = m.weight
                w.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4)


def _dot_response(net: nn.Module, h: int, w: int, r: int, c: int) -> torch.Tensor:
    """|G(background + dot at (r, c)) - G(background)| summed over channels: (h, w)."""
    bg = torch.full((1, 3, h, w), 0.5)
    dot = bg.clone()
    dot[..., r, c] = 1.0
    with torch.no_grad():
        return (net(dot) - net(bg)).abs().sum(dim=(0, 1))


def test_resnet_generator_keeps_features_in_place() -> None:
    """Alignment: a bright dot's response is centred exactly on the dot, on a size that needs padding.

    Why this test is sound: with mirror-symmetric kernels every layer commutes with reflecting the
    image about a point of the coarsest grid (a multiple of 2**n_down): convs and stride-2 convs map
    fine pixel 2j to coarse j, transposed convs map coarse j back to fine 2j, and norms / ReLU / tanh
    are pointwise or use global per-channel statistics. So the response to a dot on that grid must be
    mirror-symmetric about the dot, hence centred on it, unless the network's geometry (pad/crop
    bookkeeping for odd sizes, stride/padding/output_padding choices) shifts it. Padding on the wrong
    side, cropping the wrong end or a half-pixel offset in the up-sampling all break the symmetry.
    We look at a window around the dot whose receptive field stays clear of the borders (where
    zero/reflect padding is legitimately asymmetric). 97x75 is padded to 100x76 inside the network.
    """
    torch.manual_seed(0)
    net = ResnetGenerator(ngf=8, n_blocks=1, n_down=2).eval()
    _symmetrise_kernels(net)
    r, c, rad = 48, 36, 6
    resp = _dot_response(net, 97, 75, r, c)
    win = resp[r - rad : r + rad + 1, c - rad : c + rad + 1]
    assert win.max() > 1e-3  # the dot does produce a response
    assert torch.allclose(win, win.flip(0), atol=1e-6)
    assert torch.allclose(win, win.flip(1), atol=1e-6)
    ys, xs = torch.meshgrid(torch.arange(-rad, rad + 1.0), torch.arange(-rad, rad + 1.0), indexing="ij")
    assert abs(float((win * ys).sum() / win.sum())) < 1e-4
    assert abs(float((win * xs).sum() / win.sum())) < 1e-4


def test_resnet_generator_is_translation_equivariant_for_shifts_of_2_pow_n_down() -> None:
    """Any weights (here: default init): moving the dot by 4 px moves the response by exactly 4 px."""
    torch.manual_seed(1)
    net = ResnetGenerator(ngf=8, n_blocks=1, n_down=2).eval()
    rad = 8
    a = _dot_response(net, 97, 75, 44, 32)[44 - rad : 44 + rad + 1, 32 - rad : 32 + rad + 1]
    b = _dot_response(net, 97, 75, 48, 36)[48 - rad : 48 + rad + 1, 36 - rad : 36 + rad + 1]
    assert a.max() > 1e-3
    assert torch.allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------------------------- PatchGAN


@pytest.mark.parametrize(("size", "out"), [(70, 6), (256, 30), (64, 6), (37, 2)])
def test_patchgan_output_size_is_floor_s_over_8_minus_2(size: int, out: int) -> None:
    """70 -> 35 -> 17 -> 8 (three stride-2 4x4 convs) -> 7 -> 6 (two stride-1 4x4 convs)."""
    net = NLayerDiscriminator(ndf=8)
    assert net(torch.rand(2, 3, size, size)).shape == (2, 1, out, out)


def test_patchgan_receptive_field_is_70x70() -> None:
    """The gradient of one interior logit w.r.t. the input is non-zero on exactly a 70x70 square
    (norm="none": instance norm's global statistics would couple every pixel)."""
    torch.manual_seed(0)
    net = NLayerDiscriminator(ndf=4, norm="none")
    x = torch.rand(1, 3, 140, 140, requires_grad=True)
    out = net(x)
    assert out.shape == (1, 1, 15, 15)
    out[0, 0, 7, 7].backward()
    support = x.grad.abs().sum(dim=(0, 1)) > 0
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (70, 70)


def test_patchgan_layers_follow_the_paper() -> None:
    net = NLayerDiscriminator()
    convs = [m for m in net.model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.model) == 3
    assert n_params(net) == 2_764_737  # junyanz prints "[Network D_A] ... 2.765 M"


def test_unknown_norm_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="norm must be"):
        NLayerDiscriminator(norm="layer")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- init/registries


def test_init_weights_normal_sets_conv_weights_to_n0_002_and_biases_to_zero() -> None:
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(ngf=16, n_blocks=2), "normal", 0.02)
    weights = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, nn.Conv2d)])
    assert abs(weights.std().item() - 0.02) < 0.001
    assert abs(weights.mean().item()) < 0.001
    assert all(
        torch.count_nonzero(m.bias) == 0
        for m in net.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m.bias is not None
    )


def test_init_weights_sets_batchnorm_to_n1_gain() -> None:
    torch.manual_seed(0)
    net = init_weights(SRGANDiscriminator(channels=32), "normal", 0.02)
    gammas = torch.cat([m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(gammas.mean().item() - 1.0) < 0.01
    assert 0.01 < gammas.std().item() < 0.03


def test_init_weights_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="init_type"):
        init_weights(nn.Conv2d(1, 1, 3), "uniform")  # type: ignore[arg-type]


def test_model_registries_build_networks_by_yaml_name() -> None:
    assert SR_GENERATORS.get("srresnet") is SRResNet
    assert SR_DISCRIMINATORS.get("srgan") is SRGANDiscriminator
    assert DEGRADATION_GENERATORS.get("resnet") is ResnetGenerator
    assert DEGRADATION_CRITICS.get("patchgan") is NLayerDiscriminator
    net = SR_GENERATORS.build("srresnet", channels=8, n_blocks=1)
    assert isinstance(net, SRResNet)
    with pytest.raises(RegistryError, match="unknown SR generator 'edsr'; known: .*srresnet"):
        SR_GENERATORS.get("edsr")


def test_model_registries_declare_the_arguments_csrgan_injects() -> None:
    """Channels, the scale and the patch size come from the data, never from YAML."""
    assert set(SR_GENERATORS.injected("srresnet")) == {"in_ch", "scale"}
    assert set(SR_DISCRIMINATORS.injected("srgan")) == {"in_ch", "patch_size"}
    assert set(DEGRADATION_GENERATORS.injected("resnet")) == {"in_ch", "out_ch"}
    assert set(DEGRADATION_CRITICS.injected("patchgan")) == {"in_ch"}
    net = SR_GENERATORS.build_with("srresnet", {"channels": 8, "n_blocks": 1}, {"in_ch": 3, "scale": 2})
    assert isinstance(net, SRResNet) and net.scale == 2 and len(net.upsample) == 1
    with pytest.raises(RegistryError, match=r"needs \['scale'\]"):
        SR_GENERATORS.build_with("srresnet", {"channels": 8}, {"in_ch": 3})


@pytest.mark.parametrize(("n_blocks", "scale", "radius"), [(1, 4, 10), (16, 4, 40), (0, 2, 8)])
def test_srresnet_receptive_radius(n_blocks: int, scale: int, radius: int) -> None:
    """head 4 + 2 per block + body tail 1 + up-convs (1 + 1/2 + ...) + 9x9 tail at the output scale
    (4 / scale), rounded up: 9.5 -> 10 for one block at x4, 39.5 -> 40 at paper size, 8 for none at x2."""
    assert SRResNet(channels=4, n_blocks=n_blocks, scale=scale).receptive_radius == radius


# ------------------------------------------------------------------------------- generator artefacts
SR_SPEC = GeneratorSpec("sr", "srresnet", {"channels": 8, "n_blocks": 1, "global_bicubic_skip": False}, 4)


def test_build_generator_builds_the_spec_with_the_injected_arguments() -> None:
    net = build_generator(SR_SPEC)
    assert isinstance(net, SRResNet) and net.scale == 4
    g = build_generator(GeneratorSpec("degradation", "resnet", {"ngf": 4, "n_blocks": 1}, 4))
    assert isinstance(g, ResnetGenerator)
    assert g(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="do not fit 'srresnet'"):
        build_generator(GeneratorSpec("sr", "srresnet", {"width": 8}, 4))


def test_generator_round_trips_through_its_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_generator(SR_SPEC).eval()
    spec = GeneratorSpec(SR_SPEC.role, SR_SPEC.type, SR_SPEC.args, SR_SPEC.scale, {"step": 7})
    out = save_generator(tmp_path / "final", net, spec)
    assert out == tmp_path / "final"
    stored = json.loads((out / GENERATOR_CONFIG_FILE).read_text())
    assert stored == {
        "format": "csrgan.generator/v2",
        "role": "sr",
        "type": "srresnet",
        "args": SR_SPEC.args,
        "scale": 4,
        "meta": {"step": 7},
    }
    state, read_spec = read_generator(out)
    assert read_spec == spec
    assert read_generator(out / GENERATOR_FILE)[1] == spec
    assert state.keys() == net.state_dict().keys()
    loaded = load_generator(out, "sr", scale=4)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_save_generator_refuses_weights_that_do_not_fit_the_spec(tmp_path: Path) -> None:
    other = GeneratorSpec("sr", "srresnet", {"channels": 4, "n_blocks": 1}, 4)
    with pytest.raises(ValueError, match="do not fit"):
        save_generator(tmp_path / "g", build_generator(SR_SPEC), other)
    assert not (tmp_path / "g").exists()


def test_load_generator_refuses_the_wrong_role_and_the_wrong_scale(tmp_path: Path) -> None:
    out = save_generator(tmp_path / "final", build_generator(SR_SPEC), SR_SPEC)
    with pytest.raises(ValueError, match="holds an SR generator .*but a degradation generator .*is needed"):
        load_generator(out, "degradation")
    with pytest.raises(ValueError, match="trained for x4, not x2"):
        load_generator(out, "sr", scale=2)


def test_read_generator_refuses_other_formats_and_missing_files(tmp_path: Path) -> None:
    out = save_generator(tmp_path / "final", build_generator(SR_SPEC), SR_SPEC)
    (out / GENERATOR_CONFIG_FILE).write_text(json.dumps({"arch": "SRResNet", "channels": 8}))
    with pytest.raises(ValueError, match=r"not a csrgan csrgan\.generator/v2 generator spec"):
        read_generator(out)
    (out / GENERATOR_CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="spec .* is missing"):
        read_generator(out)
    with pytest.raises(FileNotFoundError, match="no generator at"):
        read_generator(tmp_path / "nowhere")
