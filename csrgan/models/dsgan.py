"""Degradation networks that keep content: an identity-initialised residual ``G`` and DSGAN's critic.

Why these exist. Junyanz's ResNet generator (:mod:`csrgan.models.cyclegan`) starts as a random map and
must first *learn* the identity; at a CPU budget it never does, and its instance norms over a tiny
bottleneck make its output depend on the input size (measured: ``G(x)`` 15-23 dB from ``x``,
docs/degradation.md). A degradation is a small change of ``x``, so the generator here is
``G(x) = x + r(x, z)`` with the last conv of ``r`` zero-initialised: at step 0 ``G`` is exactly the
identity and training only has to learn the degradation. No normalisation layers, so ``G`` is a
translation-equivariant local operator (its output at a pixel depends only on a
``receptive_radius`` neighbourhood): whole-image and patch application agree away from the borders.

``noise_channels`` feeds ``z ~ N(0, 1)`` per pixel as extra input channels: a deterministic ``G(x)``
cannot make sensor noise (it can only turn image texture into pseudo-noise), a ``G(x, z)`` can.

The critic follows Fritsche, Gu, Timofte (ICCVW 2019, "Frequency Separation for Real-World
Super-Resolution", code: manuelfritsche/real-world-sr, ``dsgan/model.py``): three 5x5 convs (``ndf``,
``2 ndf``, ``4 ndf``; BN after the last two, LeakyReLU 0.2) and a 1x1 conv to one logit *per pixel*.
It is applied to the high-pass part of an image by the frequency-separation objective
(:mod:`csrgan.train.dsgan`); the network itself is a plain image critic.
"""

from __future__ import annotations

import torch
from torch import nn

from csrgan.registry import DEGRADATION_CRITICS, DEGRADATION_GENERATORS

__all__ = ["DSGANDiscriminator", "ResidualDegradationGenerator"]


def _positive(owner: str, **values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{owner}: {name} must be a non-negative integer, got {v!r}")


class _ResBlock(nn.Module):
    """conv3x3 - PReLU - conv3x3, plus the identity (DSGAN's generator block, no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@DEGRADATION_GENERATORS.register("residual", injected=("in_ch", "out_ch"))
class ResidualDegradationGenerator(nn.Module):
    """``G(x, z) = x + r(x, z)``, identity at initialisation; ``(N, 3, H, W)`` -> same, values ~[0, 1].

    ``r``: conv3x3 (``3 + noise_channels`` -> ``nf``) + PReLU, ``n_blocks`` residual blocks, conv3x3 to
    3 channels (weights and bias zero at construction, and :func:`csrgan.models.cyclegan.init_weights`
    must not be applied to it: :attr:`keeps_init` says so). Any ``H, W >= 1``; zero padding.
    The output is not clamped (gradients); callers that store it round and clamp to uint8.
    """

    #: the trainer must not re-initialise this network (it would undo the identity start)
    keeps_init = True

    def __init__(
        self, in_ch: int = 3, out_ch: int = 3, nf: int = 32, n_blocks: int = 4, noise_channels: int = 1
    ) -> None:
        super().__init__()
        _positive("ResidualDegradationGenerator", nf=nf, n_blocks=n_blocks, noise_channels=noise_channels)
        if in_ch != out_ch:
            raise ValueError(f"ResidualDegradationGenerator: in_ch ({in_ch}) must equal out_ch ({out_ch})")
        if nf < 1:
            raise ValueError("ResidualDegradationGenerator: nf must be >= 1")
        self.noise_channels = noise_channels
        self.head = nn.Sequential(nn.Conv2d(in_ch + noise_channels, nf, 3, padding=1), nn.PReLU(nf))
        self.body = nn.Sequential(*[_ResBlock(nf) for _ in range(n_blocks)])
        self.tail = nn.Conv2d(nf, out_ch, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.n_blocks = n_blocks

    @property
    def receptive_radius(self) -> int:
        """LR pixels of context each output pixel sees on each side (head + 2 per block + tail)."""
        return 2 + 2 * self.n_blocks

    def forward(
        self, x: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``z``: the noise input ``(N, noise_channels, H, W)``; drawn (from ``generator``) if None."""
        if x.ndim != 4:
            raise ValueError(f"ResidualDegradationGenerator expects (N, C, H, W), got {tuple(x.shape)}")
        inp = x
        if self.noise_channels:
            if z is None:
                shape = (x.shape[0], self.noise_channels, *x.shape[2:])
                z = torch.randn(shape, generator=generator, device=x.device if generator is None else "cpu")
                z = z.to(device=x.device, dtype=x.dtype)
            inp = torch.cat([x, z], dim=1)
        return x + self.tail(self.body(self.head(inp)))


@DEGRADATION_CRITICS.register("dsgan", injected=("in_ch",))
class DSGANDiscriminator(nn.Module):
    """DSGAN's critic: 5x5 convs ``ndf, 2 ndf, 4 ndf`` (+BN on the last two, LeakyReLU 0.2), 1x1 -> logit.

    Output ``(N, 1, H, W)``: one real/fake logit per pixel (receptive field 13x13). DSGAN uses
    ``ndf = 64``; the CPU quickstart uses 16.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64) -> None:
        super().__init__()
        _positive("DSGANDiscriminator", in_ch=in_ch, ndf=ndf)
        self.model = nn.Sequential(
            nn.Conv2d(in_ch, ndf, 5, padding=2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, 2 * ndf, 5, padding=2),
            nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * ndf, 4 * ndf, 5, padding=2),
            nn.BatchNorm2d(4 * ndf),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * ndf, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
