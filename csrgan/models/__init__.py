"""Networks: the SRGAN and ESRGAN generators/discriminators and the degradation generators/critics.

Each network registers itself in one of :mod:`csrgan.registry`'s model registries under the name an
experiment file uses (``sr.generator: {type: srresnet, ...}``): ``SR_GENERATORS`` (``srresnet``,
``rrdb``), ``SR_DISCRIMINATORS`` (``srgan``, ``vgg128``), ``DEGRADATION_GENERATORS`` (``resnet``,
``residual``) and ``DEGRADATION_CRITICS`` (``patchgan``, ``dsgan``). Every module of this package is
imported when a registry is first asked for a name, so a new network is a registered class in a new
file here and nothing else.
"""

from csrgan.models.cyclegan import NLayerDiscriminator, ResnetGenerator, init_weights
from csrgan.models.esrgan import RRDBNet, VGGStyleDiscriminator
from csrgan.models.srgan import SRGANDiscriminator, SRResNet

__all__ = [
    "NLayerDiscriminator",
    "RRDBNet",
    "ResnetGenerator",
    "SRGANDiscriminator",
    "SRResNet",
    "VGGStyleDiscriminator",
    "init_weights",
]
