"""Trainers: per-worker loop functions that run under Ray Train, or alone in one process.

A loop function receives a validated :class:`csrgan.config.ExperimentConfig` and a
:class:`csrgan.train.context.TrainContext`; it knows nothing of Ray Tune. Ray Train, local single-process
runs and tests each pass their own context.
"""
