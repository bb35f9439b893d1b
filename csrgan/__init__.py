"""csrgan: real-world super-resolution experiments (CycleGAN-made real-like LR + SRGAN) at scale.

Pipeline, in package order: ``registry`` / ``config`` (names and the experiment schema) -> ``data``
(images, resize, degradations) -> ``models`` / ``losses`` / ``metrics`` -> ``train`` (the loop skeleton,
the stage algorithms, one launcher) -> ``sweep`` (Ray Tune orchestration) -> ``results`` (Parquet),
with ``cli`` on top. Imports only ever point down this list.
"""

__version__ = "0.3.0"
