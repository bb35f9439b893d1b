"""The tiny experiment that Ray-level tests run (sweeps, cluster): tiny models on the demo data.

Shared by tests/test_sweep_ray.py, tests/test_cluster.py and tests/test_object_storage.py (import it like
``http_server``), with :func:`wait_for`, the polling helper of the tests that drive ``csrgan sweep``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def tiny(name: str, storage: Path, demo: Path, **sections: Any) -> dict[str, Any]:
    """A complete experiment dict: a 2-trial grid over ``sr.mix_prob`` in {0, 1}, 10 GAN steps each;
    a 10-iteration degradation stage that the quality gate is told to accept (``accept_poor``).

    ``sections`` replace top-level sections; a dict given for a dict section is merged one level deep.
    """
    cfg: dict[str, Any] = {
        "name": name,
        "storage": str(storage),
        "data": {"demo": {"dir": str(demo), "seed": 0}},
        "cyclegan": {  # the default learner (frequency separation), tiny
            "generator": {"type": "residual", "nf": 8, "n_blocks": 1, "noise_channels": 1},
            "discriminator": {"type": "dsgan", "ndf": 8},
            "cache_variants": 2,
            "accept_poor": True,  # 10 iterations learn no degradation; these tests are not about the gate
            "iters": 10,
            "batch_size": 2,
            "patch_size": 24,
            "eval_every": 10,
            "checkpoint_every": 10,
        },
        "sr": {
            "generator": {"channels": 8, "n_blocks": 1},
            "discriminator": {"channels": 8},
            "pretrain": {"iters": 6},
            "gan": {"iters": 10, "content": {"type": "mse"}},
            "batch_size": 2,
            "patch_size": 32,
            "eval_every": 5,
            "checkpoint_every": 5,
        },
        "eval": {"metrics": ["psnr", "ssim"]},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "search": {
            "method": "grid",
            "metric": {"name": "unknown/psnr"},
            "parameters": {"sr.mix_prob": {"values": [0.0, 1.0]}},
            "seeds": [0],
        },
    }
    for key, value in sections.items():
        merge = isinstance(value, dict) and isinstance(cfg.get(key), dict)
        cfg[key] = {**cfg[key], **value} if merge else value
    return cfg


def wait_for(
    pred: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None
) -> None:
    """Poll ``pred`` until it holds; fail with ``what`` after ``timeout`` s, or at once (with its output)
    when the driver process ``proc`` exits first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"driver exited ({proc.returncode}) before: {what}\n{out}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
