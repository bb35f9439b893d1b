"""Losses for SRGAN and CycleGAN, plus CycleGAN's image history buffer (:class:`ImagePool`).

Two registries (:mod:`csrgan.registry`) map the names a YAML config uses to constructors:

* ``LOSSES`` (``sr.pretrain.loss``, ``sr.gan.content``): ``mse``, ``l1`` (pixel losses) and ``vgg``
  (:class:`VGGContentLoss`, SRGAN's perceptual loss ``l_VGG/i,j``, Ledig et al. 2017, Eq. 5). A loss
  is called ``loss(sr, hr)``.
* ``GAN_LOSSES`` (``sr.gan.gan_mode``): ``vanilla`` and ``lsgan``, both a :class:`GANLoss` on
  discriminator logits, called ``loss(logits, target_is_real)``; and ``ragan``
  (:class:`RelativisticAverageGANLoss`, ESRGAN's), which compares real and fake logits and so has another
  interface: ``relativistic = True``, ``generator(real, fake)`` and ``discriminator(real, fake)``.

CycleGAN's cycle-consistency and identity terms are :func:`cycle_loss` and :func:`identity_loss`.

:class:`ImagePool` lives here rather than in :mod:`csrgan.models.cyclegan` because it is part of how
the discriminator *loss* is computed (on a history of fakes), not part of any network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from csrgan.registry import GAN_LOSSES, LOSSES

__all__ = [
    "GAN_LOSSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOSSES",
    "VGG19_LAYERS",
    "GANLoss",
    "ImagePool",
    "RelativisticAverageGANLoss",
    "VGGContentLoss",
    "cycle_loss",
    "identity_loss",
    "vgg19_layer_index",
]


@LOSSES.register("mse")
def mse_loss() -> nn.Module:
    """Pixel loss: mean squared error (``nn.MSELoss``)."""
    return nn.MSELoss()


@LOSSES.register("l1")
def l1_loss() -> nn.Module:
    """Pixel loss: mean absolute error (``nn.L1Loss``)."""
    return nn.L1Loss()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg19_layer_names() -> tuple[str, ...]:
    """Names of torchvision's ``vgg19().features`` modules, in order (configuration "E").

    Block ``b`` has ``n`` convs ``conv{b}_{i}``, each followed by ``relu{b}_{i}``, then ``pool{b}``:
    index 0 is conv1_1, 34 conv5_4, 35 relu5_4, 36 pool5.
    """
    names: list[str] = []
    for block, n_convs in enumerate((2, 2, 4, 4, 4), start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


VGG19_LAYERS: tuple[str, ...] = _vgg19_layer_names()


def vgg19_layer_index(layer: str) -> int:
    """Index in ``vgg19().features`` of a named layer (``"relu5_4"`` -> 35). Unknown names list the known."""
    try:
        return VGG19_LAYERS.index(layer)
    except ValueError:
        raise ValueError(f"unknown VGG19 layer {layer!r}; known: {', '.join(VGG19_LAYERS)}") from None


def _check_vgg19_features(features: nn.Module, source: str) -> None:
    """The loaded module must be VGG19's ``.features`` (37 modules, conv/ReLU/pool where expected)."""
    expected = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    modules = list(features.children()) if isinstance(features, nn.Sequential) else []
    ok = len(modules) == len(VGG19_LAYERS) and all(
        isinstance(m, expected[name[:4]]) for m, name in zip(modules, VGG19_LAYERS, strict=True)
    )
    if not ok:
        raise TypeError(
            f"VGGContentLoss: the feature extractor from {source} is not torchvision's vgg19().features "
            f"(expected an nn.Sequential of {len(VGG19_LAYERS)} conv/ReLU/max-pool modules)"
        )


@LOSSES.register("vgg", injected=("weights_source", "random_init"))
class VGGContentLoss(nn.Module):
    """SRGAN's VGG content loss: distance between VGG19 feature maps of SR and HR images.

    ``layer`` names the feature map ``φ_i,j``; the paper's ``VGG54`` is ``relu5_4`` ("obtained by the
    j-th convolution (after activation) before the i-th max-pooling"), index 35 inclusive in
    torchvision's ``vgg19().features``. ``conv5_4`` (pre-activation, as ESRGAN uses) and shallower
    maps such as ``relu2_2`` (the paper's ``VGG22``) are available by name.

    Inputs are ``[0, 1]`` images ``(N, 3, H, W)``; they are normalised with the ImageNet mean/std that
    the weights were trained with. VGG parameters are frozen (``requires_grad=False``), but the graph
    is kept for ``sr``, so gradients flow into the generator. ``hr`` is a target: no graph.

    ``feature_scale`` multiplies both feature maps before the criterion. The paper rescaled VGG
    features by 1/12.75 "to obtain VGG losses of a scale that is comparable to the MSE loss", which
    with ``criterion="mse"`` multiplies the loss by 1/12.75**2 ≈ 0.006. Default 1.0 (no rescaling):
    loss weights in configs are then the only knob, and a config can ask for ``1/12.75`` explicitly.

    Weights come from :func:`csrgan.weights.load_vgg19_features` (``weights_source``: a path, or None
    for the cache); it raises ``MissingWeightsError`` if they are absent. Random weights only with
    ``random_init=True``, and ``.provenance`` then says so; record it with every result.
    """

    def __init__(
        self,
        layer: str = "relu5_4",
        weights_source: str | None = None,
        random_init: bool = False,
        criterion: Literal["mse", "l1"] = "mse",
        feature_scale: float = 1.0,
    ) -> None:
        super().__init__()
        index = vgg19_layer_index(layer)
        if criterion not in ("mse", "l1"):
            raise ValueError(f"VGGContentLoss: criterion must be 'mse' or 'l1', got {criterion!r}")
        if not feature_scale > 0:
            raise ValueError(f"VGGContentLoss: feature_scale must be > 0, got {feature_scale!r}")
        from csrgan.weights import load_vgg19_features  # here: weights is only needed for this loss

        features, provenance = load_vgg19_features(weights_source, random_init=random_init)
        _check_vgg19_features(features, weights_source or "the weights cache")
        self.features = nn.Sequential(*list(features.children())[: index + 1]).eval()
        self.features.requires_grad_(False)
        self.layer = layer
        self.criterion = criterion
        self.feature_scale = float(feature_scale)
        self.provenance: str = provenance
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGContentLoss:
        """The feature extractor is a fixed function: it stays in eval mode whatever the caller does."""
        super().train(mode)
        self.features.eval()
        return self

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """VGG feature map of a ``[0, 1]`` image batch, times ``feature_scale``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGGContentLoss expects (N, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        return self.features((x - self.mean) / self.std) * self.feature_scale

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if sr.shape != hr.shape:
            raise ValueError(f"VGGContentLoss: sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
        with torch.no_grad():
            target = self.extract(hr)
        pred = self.extract(sr)
        return F.mse_loss(pred, target) if self.criterion == "mse" else F.l1_loss(pred, target)


class GANLoss(nn.Module):
    """Adversarial loss on discriminator logits (any shape: ``(N, 1)`` or a PatchGAN map).

    ``vanilla``: binary cross-entropy on logits (Goodfellow et al.; SRGAN). With ``target_is_real=True``
    on ``D(G(z))`` it is the non-saturating generator loss ``-log D(G(z))`` that SRGAN uses.
    ``lsgan``: mean squared error to the label (Mao et al. 2017; the CycleGAN default).
    Labels are ``real_label`` / ``fake_label`` (1 / 0); change them only for label smoothing.
    """

    def __init__(
        self, mode: Literal["vanilla", "lsgan"] = "vanilla", real_label: float = 1.0, fake_label: float = 0.0
    ) -> None:
        super().__init__()
        if mode not in ("vanilla", "lsgan"):
            raise ValueError(f"GANLoss: mode must be 'vanilla' or 'lsgan', got {mode!r}")
        self.mode = mode
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def forward(self, pred_logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.full_like(pred_logits, self.real_label if target_is_real else self.fake_label)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(pred_logits, target)
        return F.mse_loss(pred_logits, target)


@GAN_LOSSES.register("vanilla")
def vanilla_gan_loss() -> GANLoss:
    """Binary cross-entropy on logits; the non-saturating generator loss (SRGAN)."""
    return GANLoss("vanilla")


@GAN_LOSSES.register("lsgan")
def lsgan_loss() -> GANLoss:
    """Least squares (Mao et al. 2017; the CycleGAN default)."""
    return GANLoss("lsgan")


class RelativisticAverageGANLoss(nn.Module):
    """Relativistic average GAN loss (Jolicoeur-Martineau 2018), as ESRGAN (Wang et al. 2018, Eq. 1-2) uses.

    ``D_Ra(x_r, x_f) = σ(C(x_r) - E_batch[C(x_f)])`` on raw discriminator logits ``C``: "how much more
    realistic than the average fake is this real image" (and the converse ``D_Ra(x_f, x_r)``). The mean
    is over every element of the other side's logits (the batch; a PatchGAN map's positions too).

    * discriminator: ``L_D = -E[log D_Ra(x_r, x_f)] - E[log(1 - D_Ra(x_f, x_r))]``,
    * generator:     ``L_G = -E[log(1 - D_Ra(x_r, x_f))] - E[log D_Ra(x_f, x_r)]``,

    each computed as binary cross-entropy with logits and, as in BasicSR's ``esrgan_model.py``,
    **halved**: the two terms are averaged, ``l_g = (BCE(C_r - mean C_f, 0) + BCE(C_f - mean C_r, 1)) / 2``
    and ``l_d = (BCE(C_r - mean C_f, 1) + BCE(C_f - mean C_r, 0)) / 2``, i.e. ``L / 2``. With Adam the
    factor barely matters for D; for G it is part of what ``adv_weight`` means (ESRGAN's 5e-3 is BasicSR's
    weight of this halved loss).

    Which side carries gradients (BasicSR): for G the real logits are a target (detached here), and the
    gradient reaches G through both terms (through ``mean C_f`` and ``C_f``). For D each term detaches the
    other side's mean, so :meth:`discriminator_real` and :meth:`discriminator_fake` can be backpropagated
    separately, each right after its own forward (every DDP forward then has its backward; BasicSR does it
    to avoid in-place errors in distributed BatchNorm), and :meth:`discriminator` is their sum.

    Not callable as ``loss(logits, target_is_real)``: the trainer branches on :attr:`relativistic`.
    """

    relativistic = True

    @staticmethod
    def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise TypeError(
            "RelativisticAverageGANLoss (gan_mode ragan) compares real and fake logits: call "
            ".generator(real_logits, fake_logits) or .discriminator(real_logits, fake_logits)"
        )

    def generator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """``L_G / 2``; ``real_logits`` = C(HR) (detached here), ``fake_logits`` = C(G(LR)) with its graph."""
        real = real_logits.detach()
        return (self._bce(real - fake_logits.mean(), False) + self._bce(fake_logits - real.mean(), True)) / 2

    def discriminator_real(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """The real half of ``L_D / 2``: ``BCE(C_r - mean C_f, 1) / 2``, ``C_f`` detached."""
        return self._bce(real_logits - fake_logits.detach().mean(), True) / 2

    def discriminator_fake(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """The fake half of ``L_D / 2``: ``BCE(C_f - mean C_r, 0) / 2``, ``C_r`` detached."""
        return self._bce(fake_logits - real_logits.detach().mean(), False) / 2

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """``L_D / 2`` = :meth:`discriminator_real` + :meth:`discriminator_fake` (gradients included)."""
        return self.discriminator_real(real_logits, fake_logits) + self.discriminator_fake(
            real_logits, fake_logits
        )


@GAN_LOSSES.register("ragan")
def ragan_loss() -> RelativisticAverageGANLoss:
    """Relativistic average GAN (Jolicoeur-Martineau 2018; ESRGAN, Wang et al. 2018)."""
    return RelativisticAverageGANLoss()


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Cycle-consistency loss, L1: ``||F(G(x)) - x||_1`` (or ``||G(F(y)) - y||_1``), mean over pixels.

    CycleGAN weights it by ``λ_cycle`` (paper and junyanz: 10) for each direction.
    """
    return F.l1_loss(reconstructed, original)


def identity_loss(mapped: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Identity loss, L1: ``||G(y) - y||_1`` (or ``||F(x) - x||_1``), mean over pixels.

    Junyanz's code weights it by ``lambda_identity * λ_cycle`` with ``lambda_identity = 0.5``, i.e. the
    identity weight is 0.5 x the cycle weight (5 when ``λ_cycle = 10``). It keeps ``G`` from changing
    colours / content that are already in the target domain, which matters here: real LR and bicubic
    LR share their content and should differ only in degradations.
    """
    return F.l1_loss(mapped, original)


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017; junyanz ``ImagePool``).

    ``query(images)`` returns a batch of the same size for the discriminator. While the pool holds
    fewer than ``size`` images, each incoming image is stored and returned. After that, each image is,
    with probability 1/2, swapped for a uniformly chosen stored one (the stored one is returned and
    replaced by the new image), else returned as is. ``size=0`` disables the pool.

    Randomness comes only from ``generator`` (a CPU ``torch.Generator`` the caller seeds), never from
    a global RNG. :meth:`state_dict` holds the images *and* the generator state, so a run resumed from
    a checkpoint sees bit-for-bit the same discriminator inputs as an uninterrupted one (provided the
    caller does not share ``generator`` with other consumers between save and resume).
    """

    def __init__(self, size: int = 50, *, generator: torch.Generator) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"ImagePool: size must be an integer >= 0, got {size!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"ImagePool: generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"ImagePool: generator must live on the CPU, got {generator.device}")
        self.size = size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _index(self) -> int:
        return int(torch.randint(0, self.size, (), generator=self.generator))

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch ``(N, C, H, W)`` of current and/or past images; stored copies are detached."""
        if self.size == 0:
            return images
        out: list[torch.Tensor] = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self._uniform() > 0.5:
                k = self._index()
                out.append(self.images[k].to(image.device))
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state: size, the stored images (CPU copies) and the generator state."""
        return {
            "size": self.size,
            "images": [img.detach().cpu().clone() for img in self.images],
            "generator_state": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (images and RNG state); sizes must match."""
        missing = {"size", "images", "generator_state"} - set(state)
        if missing:
            raise KeyError(f"ImagePool.load_state_dict: state lacks {sorted(missing)}")
        if state["size"] != self.size:
            raise ValueError(
                f"ImagePool.load_state_dict: pool size {self.size} != saved size {state['size']}"
            )
        images = list(state["images"])
        if len(images) > self.size:
            raise ValueError(
                f"ImagePool.load_state_dict: {len(images)} saved images exceed the pool size {self.size}"
            )
        self.images = [img.clone() for img in images]
        self.generator.set_state(state["generator_state"])
