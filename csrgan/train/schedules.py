"""Learning-rate schedules as data: ``sr.pretrain.schedule`` / ``sr.gan.schedule: {type: NAME, ...}``.

Each schedule is a registered constructor (:data:`csrgan.registry.SCHEDULES`) whose YAML arguments are
its keyword arguments; ``optimizer`` and ``iters`` (the phase's length) are injected. Schedulers are
stepped once per iteration, after the optimiser step, so ``milestones`` are iterations.

=============  ============================================================================================
``constant``   the optimiser's learning rate throughout (SRGAN pre-training; the default)
``multistep``  ``lr *= gamma`` at each milestone: Ledig et al. (SRGAN: 1e-4, then 1e-5 at half of 2e5),
               Wang et al. (ESRGAN: 1e-4 halved at 50k, 100k, 200k, 300k of 400k)
``cosine``     cosine annealing from the optimiser's lr to ``eta_min`` over ``iters`` (no restarts;
               Real-ESRGAN and traiNNer-redux configs use it)
=============  ============================================================================================

:func:`describe` is the one-line spelling written into every result row (``lr_schedule``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, MultiStepLR

from csrgan.registry import SCHEDULES

__all__ = ["build_schedule", "constant", "cosine", "describe", "lr_now", "multistep"]

_INJECTED = ("optimizer", "iters")


@SCHEDULES.register("constant", injected=_INJECTED)
def constant(optimizer: Optimizer, iters: int) -> LRScheduler:
    """The optimiser's learning rate, unchanged (a scheduler all the same: one code path, one state)."""
    return LambdaLR(optimizer, lambda _step: 1.0)


@SCHEDULES.register("multistep", injected=_INJECTED)
def multistep(
    optimizer: Optimizer,
    iters: int,
    milestones: list[Annotated[int, Field(gt=0)]],
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5,
) -> LRScheduler:
    """``lr *= gamma`` after each iteration in ``milestones`` (strictly increasing, each < ``iters``)."""
    if list(milestones) != sorted(set(milestones)) or any(m <= 0 for m in milestones):
        raise ValueError(f"multistep: milestones must be positive and strictly increasing, got {milestones}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"multistep: gamma must be in (0, 1], got {gamma}")
    return MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


@SCHEDULES.register("cosine", injected=_INJECTED)
def cosine(optimizer: Optimizer, iters: int, eta_min: Annotated[float, Field(ge=0.0)] = 1e-7) -> LRScheduler:
    """Cosine annealing to ``eta_min`` at ``iters`` (one half-period; no warm restarts)."""
    if eta_min < 0:
        raise ValueError(f"cosine: eta_min must be >= 0, got {eta_min}")
    return CosineAnnealingLR(optimizer, T_max=max(int(iters), 1), eta_min=eta_min)


def build_schedule(spec: Any, optimizer: Optimizer, iters: int) -> LRScheduler:
    """The scheduler of a ``schedule`` config (:class:`csrgan.config.ScheduleSpec`) for ``optimizer``."""
    return SCHEDULES.build_with(spec.type, spec.kwargs(), {"optimizer": optimizer, "iters": iters})


def describe(spec: Any) -> str:
    """``"multistep(milestones=[50000], gamma=0.1)"``: the schedule as written into result rows."""
    args = ", ".join(f"{k}={v}" for k, v in sorted(spec.kwargs().items()))
    return f"{spec.type}({args})"


def lr_now(scheduler: LRScheduler) -> float:
    """The learning rate of the first parameter group after the last ``step()``."""
    return float(scheduler.get_last_lr()[0])
