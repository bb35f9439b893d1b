"""Networks: the SRGAN generator/discriminator and the CycleGAN generators/discriminators.

``MODELS`` maps the names a YAML config uses to constructors, e.g.
``MODELS.build("srresnet", channels=16, n_blocks=2)``.
"""

from csrgan.models.cyclegan import NLayerDiscriminator, ResnetGenerator, init_weights
from csrgan.models.srgan import SRGANDiscriminator, SRResNet
from csrgan.registry import Registry

MODELS = Registry("model")
MODELS.register("srresnet")(SRResNet)
MODELS.register("srgan_discriminator")(SRGANDiscriminator)
MODELS.register("resnet_generator")(ResnetGenerator)
MODELS.register("patchgan")(NLayerDiscriminator)

__all__ = [
    "MODELS",
    "NLayerDiscriminator",
    "ResnetGenerator",
    "SRGANDiscriminator",
    "SRResNet",
    "init_weights",
]
