"""The efficiency switches a run trains with: ``resources.amp`` / ``channels_last`` / ``compile``, resolved.

``amp`` and ``channels_last`` may be ``"auto"`` (the default): the faster setting for the worker's
device type *and the stage's kind of network* (:data:`WORKLOADS`: the SR stages, or the degradation
learners), taken from :data:`DEFAULTS`, a table of measurements; each entry cites the command and the
numbers that chose it. The split exists because the measurements disagree between the two on CPU:
channels_last speeds up every SR step measured and slows the degradation learners down. An explicit
``true``/``false`` always wins, on any device and stage: bf16 autocast on a CPU is much slower here but
allowed when asked for. ``compile`` is never automatic (the first steps pay minutes of compilation:
worth it for long runs only).

What a run actually used is :class:`Efficiency`, written into every result row (``amp``,
``channels_last``, ``compile``: :meth:`csrgan.train.loop.TrainLoop.settings`), so rows from different
machines say how they were trained even when their configs both said ``auto``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Literal

import torch

from csrgan.config import ResourcesConfig

__all__ = [
    "DEFAULTS",
    "DEGRADATION_STAGES",
    "FALLBACK",
    "WORKLOADS",
    "Efficiency",
    "Measured",
    "Workload",
    "check_compiler",
    "resolve",
    "workload_of",
]

#: ``sr``: SRResNet / RRDBNet generators, SRGAN / VGG-style critics, the VGG content loss (the SR
#: phases, also when they train a degradation generator jointly). ``degradation``: stage 1's learners
#: (DSGAN's residual G and 5x5 high-pass critic, junyanz's CycleGAN with instance norm; batch 1 by default).
Workload = Literal["sr", "degradation"]
WORKLOADS: tuple[Workload, ...] = ("sr", "degradation")
#: stage names (``TrainLoop.stage``) of the degradation learners: csrgan.train.degradation.PHASE
DEGRADATION_STAGES = frozenset({"cyclegan"})


def workload_of(stage: str) -> Workload:
    return "degradation" if stage in DEGRADATION_STAGES else "sr"


@dataclass(frozen=True)
class Efficiency:
    """The switches in effect for one run (``"auto"`` resolved)."""

    amp: bool
    channels_last: bool
    compile: bool


@dataclass(frozen=True)
class Measured:
    """The ``auto`` choice for one device type and workload, and the measurement behind it."""

    amp: bool
    channels_last: bool
    evidence: str


_CUDA = (
    "NOT measured in this project (no GPU was available to the task that set it): bf16 autocast and "
    "channels_last are the standard settings for convolutional training on tensor-core GPUs (cuDNN's "
    "NHWC tensor-core kernels; bf16 needs no loss scaling). Measure with `benchmarks/train_step.py "
    "--device cuda --size paper --compare amp` and `--compare channels-last`."
)
_CPU_AMP = (
    "bf16 autocast: `benchmarks/train_step.py --threads 1 --clock cpu --compare amp` on 2 shared AMD EPYC "
    "cores (AVX2, no AMX/AVX512-BF16), torch 2.14.1, 2026-12-01: 4-33x SLOWER everywhere (time off / on, "
    "median of 3 runs, paper and ESRGAN/DSGAN 1): SRGAN step 0.056 (cpu-small) / 0.067 (quickstart) / "
    "0.047 (paper), SR pre-training step 0.21 / 0.064, ESRGAN 0.030 (quickstart), CycleGAN 0.23 / 0.087 / "
    "0.046, DSGAN 0.053 (quickstart)"
)

#: ``auto`` per (``torch.device.type``, workload); other device types get :data:`FALLBACK`.
DEFAULTS: dict[tuple[str, Workload], Measured] = {
    ("cuda", "sr"): Measured(amp=True, channels_last=True, evidence=_CUDA),
    ("cuda", "degradation"): Measured(amp=True, channels_last=True, evidence=_CUDA),
    ("cpu", "sr"): Measured(
        amp=False,
        channels_last=True,
        evidence=(
            f"{_CPU_AMP}. channels_last: `benchmarks/train_step.py --threads 1 --clock cpu --compare "
            "channels-last --size cpu-small|quickstart|paper --which srgan,esrgan,ema` (same machine; "
            "step time off / on, median of 8 alternating pairs, paper 3; median [range] of 2-3 runs): SR "
            "pre-training step 1.39 [1.21-1.48] cpu-small, 1.44 [1.28-1.49] quickstart; SRGAN GAN step "
            "1.07 [1.04-1.11] cpu-small, 1.34 [1.32-1.41] quickstart, 1.20 [1.19-1.21] paper; ESRGAN GAN "
            "step 1.07 [1.05-1.12] cpu-small, 1.20 [1.12-1.25] quickstart, 0.96 paper (n = 1, 2 pairs: the "
            "one SR step measured slower; 57 s per step on this CPU, nobody trains it here). On, since "
            "the demo's SR phases gain 1.3-1.4x. (With the VGG content network left NCHW the SRGAN step "
            "was 0.74-0.75 at cpu-small, 1.17 at paper: the loss network should follow the nets' memory "
            "format.)"
        ),
    ),
    ("cpu", "degradation"): Measured(
        amp=False,
        channels_last=False,
        evidence=(
            f"{_CPU_AMP}. channels_last: `benchmarks/train_step.py --threads 1 --clock cpu --compare "
            "channels-last --which dsgan,cyclegan` (as for the SR entry): DSGAN step 1.04 [0.98-1.05] "
            "cpu-small, 0.97 [0.94-0.98] quickstart, 0.79 [0.77-0.82] paper; CycleGAN step 1.03 "
            "[0.95-1.05] cpu-small, 0.95 [0.95-0.99] quickstart, 0.94 [0.91-0.96] paper: slower at the "
            "demo's and the default sizes, so off"
        ),
    ),
}

FALLBACK = Measured(amp=False, channels_last=False, evidence="not measured: the plain fp32, NCHW path")


def resolve(resources: ResourcesConfig, device: torch.device | str, workload: Workload = "sr") -> Efficiency:
    """``resources``' switches for ``workload`` on ``device``: ``"auto"`` from :data:`DEFAULTS`,
    explicit values as given."""
    if workload not in WORKLOADS:
        raise ValueError(f"resolve: workload must be one of {WORKLOADS}, got {workload!r}")
    default = DEFAULTS.get((torch.device(device).type, workload), FALLBACK)
    r = resources
    return Efficiency(
        amp=default.amp if r.amp == "auto" else bool(r.amp),
        channels_last=default.channels_last if r.channels_last == "auto" else bool(r.channels_last),
        compile=bool(r.compile),
    )


def check_compiler() -> None:
    """Fail early, naming the field, when ``torch.compile`` cannot work here: inductor needs a host
    C++ compiler (``g++``/``c++``, or ``$CXX``) for its CPU kernels, and Triton builds its GPU launchers
    with the host compiler too. Without this check the error would come from deep in the first
    training step (and only after minutes of tracing)."""
    try:
        import torch._inductor.config  # noqa: F401 - cpp_builder reads config.cpp.cxx, set up on import
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: look for a compiler the way inductor's default does
        names = (os.environ.get("CXX"), "g++", "c++", "clang++")
        problem = None if any(c and shutil.which(c) for c in names) else "no g++ / c++ / clang++ on PATH"
    else:
        try:
            get_cpp_compiler()
            problem = None
        except Exception as exc:  # inductor's InvalidCxxCompiler
            problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        raise ValueError(
            f"resources.compile: torch.compile needs a C++ compiler on the host (g++ / c++, or $CXX), and "
            f"none works here ({problem}); set resources.compile: false or install one"
        )
