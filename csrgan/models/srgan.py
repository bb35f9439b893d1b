"""SRGAN networks (Ledig et al., CVPR 2017, "Photo-Realistic Single Image Super-Resolution Using a GAN").

* :class:`SRResNet` is the generator ``G_θG`` of the paper (Fig. 4, top). Trained with pixel MSE alone it
  is "SRResNet"; trained with content (VGG) + adversarial loss it is "SRGAN".
* :class:`SRGANDiscriminator` is ``D_θD`` (Fig. 4, bottom).

Value range. Both networks take float ``(N, C, H, W)`` tensors in ``[0, 1]`` (the csrgan tensor
convention, see :mod:`csrgan.data.io`). The paper scaled LR inputs to ``[0, 1]`` and HR targets / SR
outputs to ``[-1, 1]`` with a final ``tanh``. We keep the generator output *linear* and in ``[0, 1]``
space: no ``tanh`` (which saturates and slows learning of near-black/near-white pixels) and no rescale.
Outputs may leave ``[0, 1]`` slightly; they are clamped only when quantised to uint8
(:func:`csrgan.data.io.to_uint8`), exactly once, before any metric is computed.

Sizes are configurable; the defaults are the paper's (B = 16 residual blocks, 64 feature maps, x4).
Small CPU models use e.g. ``channels=16, n_blocks=2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from csrgan.registry import SR_DISCRIMINATORS, SR_GENERATORS

__all__ = ["ResidualBlock", "SRGANDiscriminator", "SRResNet", "UpsampleBlock", "upsampling_octaves"]


def upsampling_octaves(scale: int) -> int:
    """Number of x2 PixelShuffle stages for ``scale``; raises ``ValueError`` unless scale is 2, 4, 8, ..."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2 or scale & (scale - 1):
        raise ValueError(f"SRResNet: scale must be a power of 2 (2, 4, 8, ...), got {scale!r}")
    return int(math.log2(scale))


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity (the paper's "B residual blocks")."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleBlock(nn.Module):
    """conv3x3 (C -> 4C) - PixelShuffle(2) - PReLU: one x2 octave (sub-pixel convolution, Shi et al. 2016)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels * 4, 3, padding=1),
            nn.PixelShuffle(2),
            nn.PReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@SR_GENERATORS.register("srresnet", injected=("in_ch", "scale"))
class SRResNet(nn.Module):
    """The SRGAN generator: LR ``(N, in_ch, h, w)`` -> SR ``(N, in_ch, scale*h, scale*w)``, both in [0, 1].

    Layout (paper Fig. 4): 9x9 conv + PReLU ("head"); ``n_blocks`` residual blocks; conv3x3 + BN whose
    output is added to the head's output (the global skip); ``log2(scale)`` upsampling blocks; a 9x9
    conv to ``in_ch`` channels. PReLUs have a single learned slope each (``nn.PReLU()``), which gives
    the literature parameter count of ~1.55 M for the paper size.

    ``global_bicubic_skip=True`` (not in the paper) adds the bicubic upsampling of the input to the
    output, so the network only learns the residual ``SR - bicubic(LR)``. This is a known remedy when a
    small model trained briefly cannot even match bicubic interpolation: with the skip, a network
    whose body outputs ~0 already *is* bicubic. The skip uses ``F.interpolate(mode="bicubic",
    align_corners=False)`` (Keys a = -0.75, no antialiasing, which is irrelevant for upsampling); it
    is not MATLAB's a = -0.5 kernel, and does not need to be, since the body learns the residual to
    whatever the skip provides. Geometry matches: ``align_corners=False`` maps pixel centres exactly
    as PixelShuffle does (LR pixel ``i`` covers SR pixels ``scale*i .. scale*i + scale - 1``).
    """

    def __init__(
        self,
        in_ch: int = 3,
        channels: int = 64,
        n_blocks: int = 16,
        scale: int = 4,
        global_bicubic_skip: bool = False,
    ) -> None:
        super().__init__()
        _check_positive("SRResNet", in_ch=in_ch, channels=channels)
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"SRResNet: n_blocks must be an integer >= 0, got {n_blocks!r}")
        octaves = upsampling_octaves(scale)
        self.scale = scale
        self.global_bicubic_skip = global_bicubic_skip
        self.head = nn.Sequential(nn.Conv2d(in_ch, channels, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(n_blocks)))
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.upsample = nn.Sequential(*(UpsampleBlock(channels) for _ in range(octaves)))
        self.tail = nn.Conv2d(channels, in_ch, 9, padding=4)

    @property
    def receptive_radius(self) -> int:
        """Receptive-field radius in LR px: the tile ``overlap`` that makes tiled inference exact.

        9x9 head (4) + two 3x3 per residual block (2 each) + 3x3 body tail (1) + one 3x3 up-conv per x2
        octave, the k-th at scale 2**k (2**-k LR px) + 9x9 tail at the output scale (4/scale). The
        optional bicubic skip (radius 2) is smaller. Paper size (16 blocks, x4): 39.5 -> 40.
        """
        octaves = self.scale.bit_length() - 1
        radius = 4 + 2 * len(self.blocks) + 1 + sum(2.0**-k for k in range(octaves)) + 4 / self.scale
        return math.ceil(max(radius, 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"SRResNet expects (N, C, H, W), got shape {tuple(x.shape)}")
        head = self.head(x)
        features = self.body_tail(self.blocks(head)) + head
        out = self.tail(self.upsample(features))
        if self.global_bicubic_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


@SR_DISCRIMINATORS.register("srgan", injected=("in_ch", "patch_size"))
class SRGANDiscriminator(nn.Module):
    """The SRGAN discriminator: image ``(N, in_ch, H, W)`` in [0, 1] -> real/fake logits ``(N, 1)``.

    Eight 3x3 convs with widths ``c, c, 2c, 2c, 4c, 4c, 8c, 8c`` (``c = channels``, paper: 64) and
    strides ``1, 2, 1, 2, 1, 2, 1, 2``, LeakyReLU(0.2), BatchNorm after every conv but the first; then
    Dense(``dense_units``, paper: 1024) - LeakyReLU(0.2) - Dense(1). No sigmoid: the logits go to a
    ``BCEWithLogits``/LSGAN loss (numerically stable).

    Deviation from the paper: the paper's dense layer sees the 6x6 map of a 96x96 patch, so it only
    works for that size. We insert ``AdaptiveAvgPool2d(g)`` before it, ``g = ceil(patch_size / 16)``
    (each stride-2 3x3 conv with padding 1 maps ``n`` to ``ceil(n / 2)``), so any input size works
    (24, 32, 96 px, ...). At the training patch size the conv map is already ``g x g``, the pooling is
    the identity and the network is exactly the paper's (``g = 6`` for 96 px). Other sizes are
    average-pooled (or, below ``g``, repeated) onto that grid; ``patch_size`` therefore does not
    restrict the input shape, it only fixes the grid.
    """

    def __init__(
        self,
        in_ch: int = 3,
        channels: int = 64,
        patch_size: int = 96,
        dense_units: int | None = None,
    ) -> None:
        super().__init__()
        _check_positive("SRGANDiscriminator", in_ch=in_ch, channels=channels, patch_size=patch_size)
        dense_units = 16 * channels if dense_units is None else dense_units  # 1024 for channels=64
        _check_positive("SRGANDiscriminator", dense_units=dense_units)
        widths = [channels, channels, 2 * channels, 2 * channels, 4 * channels, 4 * channels]
        widths += [8 * channels, 8 * channels]
        strides = [1, 2, 1, 2, 1, 2, 1, 2]
        layers: list[nn.Module] = []
        prev = in_ch
        for i, (width, stride) in enumerate(zip(widths, strides, strict=True)):
            layers.append(nn.Conv2d(prev, width, 3, stride=stride, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev = width
        self.features = nn.Sequential(*layers)
        self.grid = math.ceil(patch_size / 16)  # the conv map side at patch_size
        self.pool = nn.AdaptiveAvgPool2d(self.grid)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * self.grid * self.grid, dense_units),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(dense_units, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"SRGANDiscriminator expects (N, C, H, W), got shape {tuple(x.shape)}")
        return self.head(self.pool(self.features(x)))
