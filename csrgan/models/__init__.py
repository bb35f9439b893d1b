"""Networks: the SRGAN generator/discriminator and the CycleGAN generators/discriminators.

Each network registers itself in one of :mod:`csrgan.registry`'s model registries under the name an
experiment file uses (``sr.generator: {type: srresnet, ...}``): ``SR_GENERATORS`` (``srresnet``),
``SR_DISCRIMINATORS`` (``srgan``), ``DEGRADATION_GENERATORS`` (``resnet``) and ``DEGRADATION_CRITICS``
(``patchgan``). Every module of this package is imported when a registry is first asked for a name,
so a new network is a registered class in a new file here and nothing else.
"""

from csrgan.models.cyclegan import NLayerDiscriminator, ResnetGenerator, init_weights
from csrgan.models.srgan import SRGANDiscriminator, SRResNet

__all__ = [
    "NLayerDiscriminator",
    "ResnetGenerator",
    "SRGANDiscriminator",
    "SRResNet",
    "init_weights",
]
