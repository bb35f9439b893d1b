"""csrgan: real-world super-resolution experiments (CycleGAN-made real-like LR + SRGAN) at scale.

Pipeline, in package order: ``data`` (images, resize, degradations) -> ``models`` / ``losses`` ->
``train`` (per-worker loops) -> ``sweep`` (Ray Tune + Train orchestration) -> ``results`` (Parquet).
"""

__version__ = "0.1.0"
