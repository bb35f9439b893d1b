"""Spec for csrgan.models.esrgan: the ESRGAN generator (RRDBNet, ``rrdb``) and discriminator
(VGGStyleDiscriminator, ``vgg128``) as BasicSR builds them, and that they work through csrgan's
registries, config schema, generator artefacts, tiled inference and export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csrgan.config import ConfigError, validate_config
from csrgan.data.io import to_tensor
from csrgan.export import DEFAULT_ATOL, check_onnx, export_generator
from csrgan.inference import model_upscaler
from csrgan.models.artifacts import (
    GeneratorSpec,
    build_generator,
    load_generator,
    read_generator,
    save_generator,
)
from csrgan.models.esrgan import RRDBNet, VGGStyleDiscriminator
from csrgan.models.tiling import tiled_forward
from csrgan.registry import SR_DISCRIMINATORS, SR_GENERATORS, RegistryError

TINY = {"channels": 8, "n_blocks": 1, "growth": 4}
SPEC = GeneratorSpec("sr", "rrdb", {**TINY, "res_scale": 0.2, "global_bicubic_skip": True}, 4, {"step": 3})


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Full-size (unscaled Kaiming) weights and non-zero biases, in float64: BasicSR's 0.1-scaled dense
    convs and the 0.2 residual scaling make the far end of the receptive field ~1e-20 of the centre,
    below float rounding; this makes every path through the network visible."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            nn.init.normal_(m.bias, 0, 0.1)
    return net.double().eval()


# ------------------------------------------------------------------------------------------ RRDBNet
def test_rrdbnet_paper_size_has_the_published_parameter_count() -> None:
    """RRDB_ESRGAN_x4.pth: 16,697,987 parameters. Per dense block five 3x3 convs with inputs
    64, 96, 128, 160, 192 (growth 32); 23 RRDBs of 3 dense blocks; conv_first, conv_body, two up-convs,
    conv_hr (64 -> 64) and conv_last (64 -> 3)."""
    rdb = sum(_conv(64 + 32 * i, 32) for i in range(4)) + _conv(64 + 4 * 32, 64)
    expected = _conv(3, 64) + 23 * 3 * rdb + 4 * _conv(64, 64) + _conv(64, 3)
    net = RRDBNet()
    assert n_params(net) == expected == 16_697_987
    assert (net.scale, len(net.body), net.octaves) == (4, 23, 2)


def test_rrdbnet_state_dict_uses_basicsr_names() -> None:
    """Same keys as BasicSR's RRDBNet(num_block=1) at x4, so converted published weights load strictly."""
    keys = list(RRDBNet(**TINY).state_dict())
    rdb = [f"body.0.rdb{r}.conv{c}.{p}" for r in (1, 2, 3) for c in range(1, 6) for p in ("weight", "bias")]
    tail = ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    tail = [f"{n}.{p}" for n in tail for p in ("weight", "bias")]
    expected = ["conv_first.weight", "conv_first.bias", *rdb, *tail]
    assert keys == expected


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize(("h", "w"), [(10, 12), (7, 5)])
def test_rrdbnet_upscales_by_scale_with_one_up_conv_per_octave(scale: int, h: int, w: int) -> None:
    net = RRDBNet(**TINY, scale=scale)
    ups = [n for n, _ in net.named_children() if n.startswith("conv_up")]
    assert ups == [f"conv_up{k}" for k in range(1, int(math.log2(scale)) + 1)]
    out = net(torch.rand(2, 3, h, w))
    assert out.shape == (2, 3, scale * h, scale * w) and out.dtype == torch.float32


@pytest.mark.parametrize("scale", [3, 6, 0, 1, 4.0, True])
def test_rrdbnet_rejects_scales_that_are_not_powers_of_two(scale: object) -> None:
    with pytest.raises(ValueError, match=r"RRDBNet: scale must be a power of 2"):
        RRDBNet(**TINY, scale=scale)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"growth": 0}, "growth must be a positive integer"),
        ({"channels": -1}, "channels must be a positive integer"),
        ({"n_blocks": -1}, "n_blocks must be an integer >= 0"),
        ({"res_scale": float("nan")}, "res_scale must be a finite number"),
    ],
)
def test_rrdbnet_rejects_bad_sizes_naming_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RRDBNet(**{**TINY, **kwargs})


def test_rrdbnet_has_no_batch_norm_and_leaky_relu_0_2() -> None:
    net = RRDBNet(channels=16, n_blocks=2, growth=8)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    assert len(convs) == 1 + 2 * 15 + 1 + 2 + 2


def test_rrdbnet_output_is_linear_and_the_bicubic_skip_adds_torch_bicubic() -> None:
    x = torch.rand(1, 3, 9, 11)
    for skip in (False, True):
        net = RRDBNet(**TINY, global_bicubic_skip=skip).eval()
        with torch.no_grad():
            net.conv_last.weight.zero_()
            net.conv_last.bias.fill_(1.7)
            out = net(x)
        expected = torch.full((1, 3, 36, 44), 1.7)
        if skip:
            expected = expected + F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        assert torch.allclose(out, expected, atol=1e-6)


def test_dense_block_convs_get_basicsr_init_scaled_by_0_1() -> None:
    """Kaiming-normal (fan-in) * 0.1 and zero biases for the dense convs; default init elsewhere."""
    torch.manual_seed(0)
    net = RRDBNet(channels=64, n_blocks=1, growth=32)
    conv = net.body[0].rdb2.conv3  # fan-in 128 * 9
    assert abs(conv.weight.std().item() - 0.1 * math.sqrt(2 / (128 * 9))) < 0.002
    assert torch.count_nonzero(conv.bias) == 0
    assert abs(net.conv_body.weight.std().item() - 1 / math.sqrt(3 * 64 * 9)) < 0.002  # PyTorch default
    assert torch.count_nonzero(net.conv_body.bias) > 0


def test_res_scale_is_used_inside_dense_blocks_and_around_rrdbs() -> None:
    """Same weights, another res_scale: other outputs; and res_scale 0 makes every RRDB the identity."""
    torch.manual_seed(0)
    a = RRDBNet(**TINY, res_scale=0.2).eval()
    b = RRDBNet(**TINY, res_scale=0.5).eval()
    b.load_state_dict(a.state_dict())
    assert {m.res_scale for m in b.modules() if hasattr(m, "res_scale")} == {0.5}
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert (a(x) - b(x)).abs().max() > 1e-4
        zero = RRDBNet(**TINY, res_scale=0.0).eval()
        feat = torch.rand(1, 8, 6, 6)
        assert torch.equal(zero.body(feat), feat)
        rdb = a.body[0].rdb1
        rdb.res_scale = 0.0
        assert torch.equal(rdb(feat), feat)


@pytest.mark.parametrize(("n_blocks", "scale", "skip", "radius"), [(1, 4, False, 19), (23, 4, False, 349),
                                                                    (0, 2, False, 4), (0, 8, True, 4),
                                                                    (2, 8, False, 34)])  # fmt: skip
def test_rrdbnet_receptive_radius_formula(n_blocks: int, scale: int, skip: bool, radius: int) -> None:
    """1 + 15 per RRDB + 1 + up-convs (1/2 + 1/4 + ...) + conv_hr and conv_last (2 / scale), rounded up."""
    net = RRDBNet(channels=4, n_blocks=n_blocks, growth=2, scale=scale, global_bicubic_skip=skip)
    assert net.receptive_radius == radius


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_one_lr_pixel_changes_the_output_exactly_within_the_receptive_radius(scale: int) -> None:
    """Perturb one LR pixel: the SR output changes only inside the LR pixels within ``receptive_radius``
    (times the scale), and the change does reach the outermost of them (the bound is tight)."""
    net = _randomise(RRDBNet(**TINY, scale=scale))
    r = net.receptive_radius
    assert r == 19
    h = 2 * r + 9
    j = h // 2
    x = torch.rand(1, 3, h, h, dtype=torch.float64)
    y = x.clone()
    y[..., j, j] += 1.0
    with torch.no_grad():
        diff = (net(y) - net(x)).abs().sum(dim=(0, 1))
    for axis in (0, 1):
        hit = torch.nonzero(diff.amax(dim=axis) > 0).flatten()
        assert scale * (j - r) <= hit.min() and hit.max() < scale * (j + r + 1)
        assert (hit.min() // scale, hit.max() // scale) == (j - r, j + r)  # tight: the bound is reached


# ------------------------------------------------------------------------------------ discriminator
def test_vgg128_is_basicsr_vgg_style_discriminator() -> None:
    net = VGGStyleDiscriminator()  # channels 64, patch 128
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert [(c.kernel_size[0], c.stride[0]) for c in convs] == [(3, 1), (4, 2)] * 5
    assert [c.bias is not None for c in convs] == [True] + [False] * 9
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.features) == 9
    assert not isinstance(net.features[1], nn.BatchNorm2d)  # no BN after conv0_0
    linears = [m for m in net.head if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(512 * 4 * 4, 100), (100, 1)]
    assert all(m.negative_slope == 0.2 for m in net.modules() if isinstance(m, nn.LeakyReLU))
    widths = [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    conv_params = _conv(3, 64) + sum(
        _conv(cin, cout, 3 if i % 2 == 0 else 4, bias=False)
        for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False), start=1)
    )
    expected = conv_params + 2 * sum(widths[1:]) + (8192 * 100 + 100) + 101
    assert n_params(net) == expected == 14_499_401


@pytest.mark.parametrize(("size", "fmap"), [(128, 4), (96, 3), (32, 1)])
def test_vgg128_returns_one_logit_for_128_96_and_32_px(size: int, fmap: int) -> None:
    net = VGGStyleDiscriminator(channels=4, patch_size=128).eval()
    x = torch.rand(3, 3, size, size)
    assert net.features(x).shape == (3, 32, fmap, fmap)
    logits = net(x)
    assert logits.shape == (3, 1) and torch.isfinite(logits).all()
    assert logits.std() > 0  # one logit per image, not a constant


@pytest.mark.parametrize(("patch_size", "grid"), [(128, 4), (96, 3), (32, 1), (100, 3), (256, 8)])
def test_vgg128_pooling_is_the_identity_at_its_patch_size(patch_size: int, grid: int) -> None:
    net = VGGStyleDiscriminator(channels=4, patch_size=patch_size).eval()
    x = torch.rand(2, 3, patch_size, patch_size)
    fmap = net.features(x)
    assert net.grid == grid and fmap.shape == (2, 32, grid, grid)
    assert torch.equal(net.pool(fmap), fmap)
    assert torch.equal(net(x), net.head(fmap))
    assert net.head[1].in_features == 32 * grid * grid


def test_vgg128_rejects_patches_and_inputs_below_32_px() -> None:
    with pytest.raises(ValueError, match=r"sr.patch_size\) must be >= 32 px"):
        VGGStyleDiscriminator(patch_size=24)
    with pytest.raises(ValueError, match=r"needs H, W >= 32, got 31x64"):
        VGGStyleDiscriminator(channels=4)(torch.rand(1, 3, 31, 64))


# --------------------------------------------------------------------------- registries and config
def test_registries_build_both_networks_with_the_injected_arguments() -> None:
    assert SR_GENERATORS.get("rrdb") is RRDBNet
    assert SR_DISCRIMINATORS.get("vgg128") is VGGStyleDiscriminator
    assert set(SR_GENERATORS.injected("rrdb")) == {"in_ch", "scale"}
    assert set(SR_DISCRIMINATORS.injected("vgg128")) == {"in_ch", "patch_size"}
    g = SR_GENERATORS.build_with("rrdb", TINY, {"in_ch": 3, "scale": 2})
    assert isinstance(g, RRDBNet) and g.scale == 2 and g(torch.rand(1, 3, 5, 6)).shape == (1, 3, 10, 12)
    d = SR_DISCRIMINATORS.build_with("vgg128", {"channels": 4}, {"in_ch": 3, "patch_size": 64})
    assert isinstance(d, VGGStyleDiscriminator) and d.grid == 2
    with pytest.raises(RegistryError, match=r"\['scale'\] are set by csrgan"):
        SR_GENERATORS.validate("rrdb", {"scale": 4})


def _config(generator: dict, discriminator: dict | None = None) -> dict:
    sr: dict = {"generator": generator, "patch_size": 128}
    if discriminator is not None:
        sr["discriminator"] = discriminator
    return {"name": "esrgan", "data": {"demo": {"dir": "/nonexistent/demo"}}, "sr": sr}


def test_config_names_rrdb_and_vgg128_and_fills_their_defaults() -> None:
    cfg = validate_config(_config({"type": "rrdb", **TINY}, {"type": "vgg128", "channels": 8}))
    assert cfg.sr.generator.type == "rrdb"
    assert cfg.sr.generator.kwargs() == {**TINY, "res_scale": 0.2, "global_bicubic_skip": False}
    assert cfg.sr.discriminator.type == "vgg128" and cfg.sr.discriminator.kwargs() == {"channels": 8}
    with pytest.raises(ConfigError, match=r"'rrdb' has no argument\(s\) \['num_feat'\].*growth"):
        validate_config(_config({"type": "rrdb", "num_feat": 8}))
    with pytest.raises(ConfigError, match=r"res_scale:.*'big'"):
        validate_config(_config({"type": "rrdb", "res_scale": "big"}))


# ------------------------------------------------------------------- artefacts, tiling and export
def _trained_like(seed: int = 0) -> nn.Module:
    """A tiny rrdb whose weights are perturbed (as after training), so no branch is ~0."""
    torch.manual_seed(seed)
    g = build_generator(SPEC)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return g.eval()


@pytest.fixture(scope="module")
def rrdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_generator(tmp_path_factory.mktemp("rrdb") / "final", _trained_like(), SPEC)


def test_rrdb_generator_artefact_round_trips(rrdb_dir: Path) -> None:
    state, spec = read_generator(rrdb_dir)
    assert spec == SPEC
    net = _trained_like()
    assert state.keys() == net.state_dict().keys()
    loaded = load_generator(rrdb_dir, "sr", scale=4)
    assert isinstance(loaded, RRDBNet) and loaded.global_bicubic_skip
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_tiled_inference_with_the_default_overlap_equals_the_whole_image(rrdb_dir: Path) -> None:
    """``csrgan upscale``'s default overlap is receptive_radius (19 here): tiles of 12 LR px on a 50x44
    image give the whole-image result; too little context (2 px) visibly does not."""
    lr = np.random.default_rng(0).integers(0, 256, (50, 44, 3), dtype=np.uint8)
    up = model_upscaler(rrdb_dir, tile=12)
    assert up.overlap == 19
    whole = model_upscaler(rrdb_dir, tile=0)(lr).astype(int)
    tiled = up(lr).astype(int)
    assert np.abs(tiled - whole).max() <= 1 and (tiled != whole).mean() < 1e-3
    net = load_generator(rrdb_dir, "sr")
    x = to_tensor(lr)
    with torch.no_grad():
        full = net(x)
    assert (tiled_forward(net, x, 4, tile=12, overlap=net.receptive_radius) - full).abs().max() < 1e-5
    assert (tiled_forward(net, x, 4, tile=12, overlap=2) - full).abs().max() > 1e-2


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_tiling_is_exact_at_the_receptive_radius_and_not_one_px_below(scale: int) -> None:
    """float64, every path visible (:func:`_randomise`): overlap = receptive_radius reproduces the
    whole image to rounding (~1e-14), one LR px less does not (~1e-10): the radius is the exact one."""
    net = _randomise(RRDBNet(**TINY, scale=scale))
    x = torch.rand(1, 3, 50, 44, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net(x)
    r = net.receptive_radius
    assert (tiled_forward(net, x, scale, tile=12, overlap=r) - full).abs().max() < 1e-12
    assert (tiled_forward(net, x, scale, tile=12, overlap=r - 1) - full).abs().max() > 1e-12


@pytest.mark.slow
def test_onnx_export_of_a_tiny_rrdb_matches_pytorch(tmp_path: Path, rrdb_dir: Path) -> None:
    """ONNX (torch.export-based exporter, dynamic batch/height/width) of nearest upsampling + bicubic skip."""
    import onnxruntime as ort

    result = export_generator(rrdb_dir, "onnx", tmp_path / "g.onnx")
    print(f"rrdb ONNX export: max abs difference vs PyTorch = {result.max_abs_diff:.3g}")
    assert 0.0 <= result.max_abs_diff <= DEFAULT_ATOL and result.spec == SPEC
    net = load_generator(rrdb_dir, "sr")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 13, 21)
    got = session.run(["sr"], {"lr": x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == (3, 3, 52, 84) and np.abs(got - want).max() <= 1e-4
    assert check_onnx(result.path, _trained_like(seed=1)) > 1e-3  # other weights are told apart


def test_safetensors_export_of_a_tiny_rrdb_is_exact(tmp_path: Path, rrdb_dir: Path) -> None:
    result = export_generator(rrdb_dir, "safetensors", tmp_path / "g.safetensors")
    assert result.max_abs_diff == 0.0 and result.spec == SPEC
