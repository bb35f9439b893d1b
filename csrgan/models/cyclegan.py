"""CycleGAN networks (Zhu et al., ICCV 2017), after the authors' code (junyanz/pytorch-CycleGAN-and-pix2pix).

Domains and paper symbols, as used throughout csrgan:

* ``X`` = bicubic LR (clean, synthetic downscaling), ``Y`` = real LR (unknown camera degradations).
* ``G: X -> Y`` makes bicubic LR "real-like"; it is the network the SR pipeline uses afterwards.
  ``F: Y -> X`` is its inverse, needed only for the cycle losses. Both are :class:`ResnetGenerator`.
* ``D_Y`` tells real ``y`` from ``G(x)``; ``D_X`` tells bicubic ``x`` from ``F(y)``. Both are
  :class:`NLayerDiscriminator` (70x70 PatchGAN).

Value range. csrgan tensors are float in ``[0, 1]``; the reference generator works in ``[-1, 1]`` with
a final ``tanh``. :class:`ResnetGenerator` maps its input to ``[-1, 1]`` (``2x - 1``) inside
``forward`` and its ``tanh`` output back to ``[0, 1]`` (``(t + 1) / 2``), so callers never see
``[-1, 1]``. Discriminators take ``[0, 1]`` images directly (their first conv absorbs the affine map).

Geometry. ``G`` must keep the LR image's exact size *and alignment*, since the SR model is trained
on (HR, G(bicubic LR)) pairs and a shift would teach it to shift. The generator pads its input
(reflect, bottom/right) to a multiple of ``2**n_down`` and crops the output back, so any ``H x W``
works (not only multiples of 4), and the stride-2 convs / transposed convs are arranged so that
coarse-grid pixel ``j`` sits exactly on fine pixel ``2j`` on the way down and up (no half-pixel drift).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from csrgan.registry import DEGRADATION_CRITICS, DEGRADATION_GENERATORS

__all__ = ["NLayerDiscriminator", "ResnetBlock", "ResnetGenerator", "init_weights"]

NormKind = Literal["instance", "batch", "none"]
InitKind = Literal["normal", "xavier", "kaiming", "orthogonal"]


def _norm_layer(kind: str, owner: str) -> Callable[[int], nn.Module]:
    """Junyanz's norm choices. Instance norm is affine-free and keeps no running stats (CycleGAN default)."""
    if kind == "instance":
        return lambda ch: nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)
    if kind == "batch":
        return lambda ch: nn.BatchNorm2d(ch, affine=True, track_running_stats=True)
    if kind == "none":
        return lambda ch: nn.Identity()
    raise ValueError(f"{owner}: norm must be 'instance', 'batch' or 'none', got {kind!r}")


def _check_int(owner: str, name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


class ResnetBlock(nn.Module):
    """reflect-pad 1 - conv3x3 - norm - ReLU - [dropout] - reflect-pad 1 - conv3x3 - norm, plus identity."""

    def __init__(self, channels: int, norm: NormKind = "instance", use_dropout: bool = False) -> None:
        super().__init__()
        norm_layer = _norm_layer(norm, "ResnetBlock")
        bias = norm != "batch"  # BatchNorm has its own affine shift; junyanz's use_bias rule
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(channels),
            nn.ReLU(inplace=True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@DEGRADATION_GENERATORS.register("resnet", injected=("in_ch", "out_ch"))
class ResnetGenerator(nn.Module):
    """Junyanz's ResNet generator (``G`` and ``F``): ``(N, in_ch, H, W)`` -> ``(N, out_ch, H, W)``, [0, 1].

    reflect-pad 3 + conv7x7 + norm + ReLU; ``n_down`` stride-2 conv3x3 (channels double); ``n_blocks``
    :class:`ResnetBlock`; ``n_down`` transposed conv3x3 (stride 2, ``output_padding=1``; channels
    halve); reflect-pad 3 + conv7x7 + tanh. Paper defaults: ``ngf=64``, 9 blocks, 2 down-samplings.

    Any ``H, W >= min_size`` works: the input is reflect-padded at the bottom/right up to a multiple
    of ``2**n_down`` and the output cropped back to ``H x W`` (top-left anchored, so no shift).
    """

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        n_down: int = 2,
        norm: NormKind = "instance",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        for name, value, minimum in (("in_ch", in_ch, 1), ("out_ch", out_ch, 1), ("ngf", ngf, 1)):
            _check_int("ResnetGenerator", name, value, minimum)
        _check_int("ResnetGenerator", "n_blocks", n_blocks, 0)
        _check_int("ResnetGenerator", "n_down", n_down, 0)
        norm_layer = _norm_layer(norm, "ResnetGenerator")
        bias = norm != "batch"
        self.n_down = n_down
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, bias=bias),
            norm_layer(ngf),
            nn.ReLU(inplace=True),
        ]
        for i in range(n_down):
            ch = ngf * 2**i
            layers += [
                nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias),
                norm_layer(ch * 2),
                nn.ReLU(inplace=True),
            ]
        ch = ngf * 2**n_down
        layers += [ResnetBlock(ch, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(n_down):
            ch = ngf * 2 ** (n_down - i)
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                norm_layer(ch // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    @property
    def multiple(self) -> int:
        """Input sizes are padded internally to a multiple of this (``2**n_down``)."""
        return 2**self.n_down

    @property
    def min_size(self) -> int:
        """Smallest H and W accepted: reflect padding needs the deepest map to be at least 2 px wide,
        and the first 7x7 reflect pad needs at least 4 px."""
        return max(4, 2 * self.multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"ResnetGenerator expects (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise ValueError(
                f"ResnetGenerator (n_down={self.n_down}) needs H, W >= {self.min_size}, got {h}x{w}"
            )
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        t = x * 2.0 - 1.0
        if pad_h or pad_w:
            t = F.pad(t, (0, pad_w, 0, pad_h), mode="reflect")
        out = self.model(t)[..., :h, :w]
        return (out + 1.0) * 0.5


@DEGRADATION_CRITICS.register("patchgan", injected=("in_ch",))
class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (``D_X``, ``D_Y``): image in [0, 1] -> map of real/fake logits ``(N, 1, h, w)``.

    4x4 convs, padding 1: ``ndf`` (stride 2, no norm), then ``n_layers - 1`` convs of width
    ``ndf * min(2**k, 8)`` (stride 2), one more (stride 1), each with norm + LeakyReLU(0.2), and a
    final 1-channel conv (stride 1). With ``n_layers=3`` the receptive field of each output logit is
    70x70 px (the "70x70 PatchGAN"): working back from one output, 4 -> 7 -> 16 -> 34 -> 70.

    Output side for an input side ``s``: ``floor(s / 2**n_layers) - 2``. Each stride-2 4x4 conv with
    padding 1 gives ``floor((s + 2 - 4) / 2) + 1 = floor(s / 2)``; each of the two stride-1 ones
    removes 1. For ``s = 70``: 35, 17, 8, 7, 6 -> a 6x6 logit map; for ``s = 256``: 30x30.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, norm: NormKind = "instance") -> None:
        super().__init__()
        _check_int("NLayerDiscriminator", "in_ch", in_ch, 1)
        _check_int("NLayerDiscriminator", "ndf", ndf, 1)
        _check_int("NLayerDiscriminator", "n_layers", n_layers, 1)
        norm_layer = _norm_layer(norm, "NLayerDiscriminator")
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for k in range(1, n_layers):
            prev, mult = mult, min(2**k, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
            norm_layer(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"NLayerDiscriminator expects (N, C, H, W), got shape {tuple(x.shape)}")
        return self.model(x)


def init_weights(net: nn.Module, init_type: InitKind = "normal", gain: float = 0.02) -> nn.Module:
    """Junyanz's initialisation, in place; returns ``net``.

    Conv / ConvTranspose / Linear weights: ``normal`` -> N(0, gain), ``xavier`` -> Xavier-normal(gain),
    ``kaiming`` -> Kaiming-normal (fan_in, ``gain`` unused), ``orthogonal`` -> orthogonal(gain); their
    biases -> 0. BatchNorm weights -> N(1, gain), biases -> 0. Affine-free InstanceNorm has nothing
    to initialise. The CycleGAN paper uses ``normal`` with gain 0.02.
    """
    if init_type not in ("normal", "xavier", "kaiming", "orthogonal"):
        raise ValueError(
            "init_weights: init_type must be 'normal', 'xavier', 'kaiming' or 'orthogonal', "
            f"got {init_type!r}"
        )

    def init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init)
    return net
