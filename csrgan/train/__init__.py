"""Training: one loop skeleton, the stage algorithms on it, and one launcher for every back-end.

* :mod:`csrgan.train.loop` — :class:`~csrgan.train.loop.TrainLoop`, what every stage shares (cadence,
  checkpoints, resume, divergence, DDP bookkeeping, seeds, threads, AMP);
* :mod:`csrgan.train.degradation` — what both degradation learners share (data, fidelity and gate,
  the cached real-like LR); :mod:`csrgan.train.dsgan` (frequency separation) and
  :mod:`csrgan.train.cyclegan` (junyanz) on it; :mod:`csrgan.train.srgan` — the SR phases;
  :mod:`csrgan.train.joint` — an SR phase that trains the degradation G with it (``sr.joint``);
  :mod:`csrgan.train.ema` (the generator's EMA), :mod:`csrgan.train.schedules` (learning rates as data),
  :mod:`csrgan.train.efficiency` (AMP, channels_last, torch.compile per device);
* :mod:`csrgan.train.stages` (+ :mod:`~csrgan.train.keys`) — the stage table: loop, inputs, key;
* :mod:`csrgan.train.launch` — ``launch(stage, cfg, out_dir, inputs, backend, reporter)`` with the
  in-process, Ray Train and Tune-trial back-ends; :mod:`csrgan.train.pipeline` — ``csrgan train``.

A loop receives a validated :class:`csrgan.config.ExperimentConfig` and a
:class:`csrgan.train.context.TrainContext`; it knows nothing of Ray Tune or of the sweep, which watch a
run through a reporter they hand down.
"""
