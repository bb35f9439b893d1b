"""ESRGAN networks (Wang et al., ECCV-W 2018, "ESRGAN: Enhanced Super-Resolution Generative Adversarial
Networks"), as in xinntao's ESRGAN and BasicSR (``archs/rrdbnet_arch.py``, ``archs/discriminator_arch.py``).

* :class:`RRDBNet` (``rrdb``) is the generator: SRResNet's layout with the residual blocks replaced by
  Residual-in-Residual Dense Blocks (RRDB), no batch norm, residual scaling, and nearest-neighbour
  upsampling + conv instead of PixelShuffle. The published x4 model (``RRDB_ESRGAN_x4.pth``: 64 feature
  maps, 23 RRDBs, growth 32) has 16,697,987 parameters, and so has ``RRDBNet()``.
* :class:`VGGStyleDiscriminator` (``vgg128``) is the discriminator ESRGAN trains with on 128 px HR
  patches (BasicSR's ``VGGStyleDiscriminator``).

Conventions are those of :mod:`csrgan.models.srgan`: float ``(N, C, H, W)`` tensors in ``[0, 1]``, a
*linear* generator output (no ``tanh``, clamped only at uint8 quantisation), discriminator logits
``(N, 1)`` without sigmoid, and the RGB channels / scale / patch size injected by csrgan.

Module and parameter names follow BasicSR (``conv_first``, ``body.<i>.rdb1.conv1``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so an x4 state dict converted to BasicSR's names
(e.g. ``ESRGAN_SRx4_DF2KOST_official-ff704c30.pth``) loads strictly into ``RRDBNet(scale=4)``.

Deviations from BasicSR, none of which changes the x4 network:

* x2 and x8 use one (nearest x2 + conv3x3 + LeakyReLU) stage per octave (``conv_up1 .. conv_upK``);
  BasicSR's x2 instead pixel-unshuffles the input and keeps two x2 stages.
* ``global_bicubic_skip`` (optional, off by default, not in the paper): see :class:`RRDBNet`.
* The discriminator pools its last feature map onto a fixed grid (see :class:`VGGStyleDiscriminator`)
  so that it accepts other patch sizes than 128 px; at 128 px it is exactly BasicSR's network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from csrgan.models.srgan import _check_positive, upsampling_octaves
from csrgan.registry import SR_DISCRIMINATORS, SR_GENERATORS

__all__ = ["RRDB", "RRDBNet", "ResidualDenseBlock", "VGGStyleDiscriminator", "default_init_weights"]

#: LeakyReLU slope of every ESRGAN layer.
LRELU_SLOPE = 0.2
#: The convs of one residual dense block (each 3x3, so each widens the receptive field by 1 px).
RDB_CONVS = 5
#: Smallest input side of :class:`VGGStyleDiscriminator`: five stride-2 4x4 convs, each ``n -> n // 2``.
VGG_MIN_SIDE = 32


def default_init_weights(modules: Iterable[nn.Module], scale: float = 1.0, bias_fill: float = 0.0) -> None:
    """BasicSR's ``default_init_weights``: Kaiming-normal (fan-in, gain sqrt(2)) conv/linear weights
    multiplied by ``scale``, biases set to ``bias_fill``.

    ESRGAN uses ``scale=0.1`` for the dense-block convs: with 23 x 3 stacked residual branches, full-size
    initial branches make the trunk's activations (and the first GAN steps) blow up; small ones start the
    network near the identity of its skip connections, which is what keeps training stable.
    """
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data.mul_(scale)
                if m.bias is not None:
                    m.bias.data.fill_(bias_fill)


def _check_res_scale(owner: str, res_scale: float) -> None:
    if isinstance(res_scale, bool) or not isinstance(res_scale, int | float) or not math.isfinite(res_scale):
        raise ValueError(f"{owner}: res_scale must be a finite number, got {res_scale!r}")


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and all earlier outputs (dense connections, growth
    ``growth`` channels each), LeakyReLU(0.2) after all but the last; output ``x + res_scale * conv5``.
    """

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2) -> None:
        super().__init__()
        self.res_scale = res_scale
        for i in range(RDB_CONVS - 1):
            setattr(self, f"conv{i + 1}", nn.Conv2d(channels + i * growth, growth, 3, 1, 1))
        self.conv5 = nn.Conv2d(channels + (RDB_CONVS - 1) * growth, channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        default_init_weights([getattr(self, f"conv{i + 1}") for i in range(RDB_CONVS)], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i in range(RDB_CONVS - 1):
            conv = getattr(self, f"conv{i + 1}")
            features.append(self.lrelu(conv(torch.cat(features, 1))))
        return self.conv5(torch.cat(features, 1)) * self.res_scale + x


class RRDB(nn.Module):
    """Residual in Residual Dense Block: three :class:`ResidualDenseBlock` ``f``; ``x + res_scale * f(x)``."""

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.rdb1 = ResidualDenseBlock(channels, growth, res_scale)
        self.rdb2 = ResidualDenseBlock(channels, growth, res_scale)
        self.rdb3 = ResidualDenseBlock(channels, growth, res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * self.res_scale + x


@SR_GENERATORS.register("rrdb", injected=("in_ch", "scale"))
class RRDBNet(nn.Module):
    """The ESRGAN generator: LR ``(N, in_ch, h, w)`` -> SR ``(N, in_ch, scale*h, scale*w)``, both in [0, 1].

    Layout (paper Fig. 3/4, BasicSR ``RRDBNet``): ``conv_first`` 3x3; ``n_blocks`` :class:`RRDB` (three
    dense blocks of five convs each, ``growth`` channels per dense conv, residual scaling ``res_scale``
    both inside each dense block and around each RRDB); ``conv_body`` 3x3 whose output is added to
    ``conv_first``'s (the global skip); ``log2(scale)`` x (nearest x2 upsampling, conv3x3, LeakyReLU);
    ``conv_hr`` 3x3 + LeakyReLU; ``conv_last`` 3x3 to ``in_ch`` channels. No batch norm (the paper
    removes it: BN causes artefacts in deep GAN-trained SR networks). ``channels`` is BasicSR's
    ``num_feat``, ``growth`` its ``num_grow_ch``. Paper size (64, 23, 32, x4): 16,697,987 parameters.

    ``global_bicubic_skip=True`` (not in the paper, nor in BasicSR) adds the bicubic upsampling of the
    input to the output, exactly as :class:`csrgan.models.srgan.SRResNet` does: a tiny model trained
    briefly on a CPU otherwise may not even reach bicubic quality, while with the skip a body that
    outputs ~0 already *is* bicubic and the network only learns the residual.
    """

    def __init__(
        self,
        in_ch: int = 3,
        channels: int = 64,
        n_blocks: int = 23,
        growth: int = 32,
        res_scale: float = 0.2,
        scale: int = 4,
        global_bicubic_skip: bool = False,
    ) -> None:
        super().__init__()
        _check_positive("RRDBNet", in_ch=in_ch, channels=channels, growth=growth)
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"RRDBNet: n_blocks must be an integer >= 0, got {n_blocks!r}")
        _check_res_scale("RRDBNet", res_scale)
        try:
            self.octaves = upsampling_octaves(scale)
        except ValueError:
            raise ValueError(f"RRDBNet: scale must be a power of 2 (2, 4, 8, ...), got {scale!r}") from None
        self.scale = scale
        self.global_bicubic_skip = global_bicubic_skip
        self.conv_first = nn.Conv2d(in_ch, channels, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(channels, growth, res_scale) for _ in range(n_blocks)))
        self.conv_body = nn.Conv2d(channels, channels, 3, 1, 1)
        for k in range(1, self.octaves + 1):
            setattr(self, f"conv_up{k}", nn.Conv2d(channels, channels, 3, 1, 1))
        self.conv_hr = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_last = nn.Conv2d(channels, in_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(LRELU_SLOPE, inplace=True)

    @property
    def receptive_radius(self) -> int:
        """Receptive-field radius in LR px: the tile ``overlap`` that makes tiled inference exact.

        Every conv is 3x3 (radius 1 at its own resolution): ``conv_first`` (1) + 15 per RRDB (3 dense
        blocks x 5 convs; the dense connections only add shorter paths) + ``conv_body`` (1) + the up-conv
        after the k-th nearest x2 upsampling at scale 2**k (2**-k LR px; nearest upsampling itself adds
        nothing) + ``conv_hr`` and ``conv_last`` at the output scale (2 / scale), rounded up. The
        optional bicubic skip (radius 2) is smaller. Paper size (23 RRDBs, x4): 348.25 -> 349; the
        tiny 1-block x4 net: 18.25 -> 19.
        """
        octaves = self.scale.bit_length() - 1
        radius = 1 + 3 * RDB_CONVS * len(self.body) + 1 + sum(2.0**-k for k in range(1, octaves + 1))
        radius += 2 / self.scale
        return math.ceil(max(radius, 2.0 if self.global_bicubic_skip else 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"RRDBNet expects (N, C, H, W), got shape {tuple(x.shape)}")
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for k in range(1, self.octaves + 1):
            up = getattr(self, f"conv_up{k}")
            feat = self.lrelu(up(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        if self.global_bicubic_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


def _vgg_level(in_ch: int, width: int, first: bool) -> list[nn.Module]:
    """One level: 3x3 stride-1 conv (+ BN unless ``first``, where it has a bias instead) + LeakyReLU,
    then 4x4 stride-2 conv without bias + BN + LeakyReLU (halves the side: ``n -> n // 2``)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 3, 1, 1, bias=first)]
    layers += [] if first else [nn.BatchNorm2d(width)]
    layers += [nn.LeakyReLU(LRELU_SLOPE, inplace=True)]
    layers += [nn.Conv2d(width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width)]
    return [*layers, nn.LeakyReLU(LRELU_SLOPE, inplace=True)]


@SR_DISCRIMINATORS.register("vgg128", injected=("in_ch", "patch_size"))
class VGGStyleDiscriminator(nn.Module):
    """The ESRGAN discriminator: image ``(N, in_ch, H, W)`` in [0, 1] -> real/fake logits ``(N, 1)``.

    BasicSR's ``VGGStyleDiscriminator`` (input 128): five levels of (3x3 stride-1 conv, 4x4 stride-2
    conv) with widths ``c, 2c, 4c, 8c, 8c`` (``c = channels``, BasicSR: 64); the first conv has a bias
    and no BN, every other conv has BN and no bias; LeakyReLU(0.2) everywhere; then
    Linear(``8c * 4 * 4`` -> 100) - LeakyReLU(0.2) - Linear(100 -> 1). No sigmoid (the logits go to a
    ``BCEWithLogits``/LSGAN/RaGAN loss).

    Deviation, as in :class:`csrgan.models.srgan.SRGANDiscriminator`: BasicSR's dense layer only fits a
    128 px input (a 4x4 map). We insert ``AdaptiveAvgPool2d(g)`` before it, with ``g`` the side of the
    conv map at ``patch_size``: each 4x4 stride-2 conv with padding 1 maps ``n`` to ``n // 2``, so
    ``g = patch_size // 32`` (4 at 128 px: the pooling is the identity and the network is exactly
    BasicSR's). Other input sizes are average-pooled (or, below ``g``, repeated) onto that grid. Inputs
    need ``H, W >= 32`` (else the last conv has no output), and so does ``patch_size``.
    """

    def __init__(self, in_ch: int = 3, channels: int = 64, patch_size: int = 128) -> None:
        super().__init__()
        _check_positive("VGGStyleDiscriminator", in_ch=in_ch, channels=channels, patch_size=patch_size)
        if patch_size < VGG_MIN_SIDE:
            raise ValueError(
                f"VGGStyleDiscriminator (vgg128): the HR patch (sr.patch_size) must be >= {VGG_MIN_SIDE} px "
                f"(five stride-2 convs), got {patch_size}"
            )
        widths = [channels, 2 * channels, 4 * channels, 8 * channels, 8 * channels]
        layers: list[nn.Module] = []
        prev = in_ch
        for i, width in enumerate(widths):
            layers += _vgg_level(prev, width, first=i == 0)
            prev = width
        self.features = nn.Sequential(*layers)
        self.grid = patch_size // VGG_MIN_SIDE  # the conv map side at patch_size
        self.pool = nn.AdaptiveAvgPool2d(self.grid)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * self.grid * self.grid, 100),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            nn.Linear(100, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"VGGStyleDiscriminator expects (N, C, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < VGG_MIN_SIDE:
            raise ValueError(
                f"VGGStyleDiscriminator needs H, W >= {VGG_MIN_SIDE}, got {x.shape[-2]}x{x.shape[-1]}"
            )
        return self.head(self.pool(self.features(x)))
