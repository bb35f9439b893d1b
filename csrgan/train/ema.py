"""An exponential moving average of a generator's weights (``sr.ema``; Real-ESRGAN, traiNNer-redux).

After every optimiser step of the generator ``θ``, :meth:`ModelEMA.update` applies
``θ_ema <- d * θ_ema + (1 - d) * θ`` to every parameter and copies every buffer: BatchNorm running
statistics are not averaged but taken from the current network (BasicSR's ``model_ema`` averages the
parameters only and leaves the EMA's buffers at their initial values; RRDBNet has no BatchNorm, so
this matters for SRResNet only). ``θ_ema`` starts as a copy of the generator at construction, so after
``k`` updates with parameters ``θ_1 .. θ_k``: ``θ_ema = d^k θ_0 + Σ_i (1 - d) d^(k-i) θ_i``.

The update is one ``torch._foreach_lerp_(θ_ema, θ, 1 - d)`` over all floating parameters
(``lerp(a, b, w) = a + w (b - a) = d a + (1 - d) b``): one fused kernel launch per dtype/device group
instead of one per tensor. It is the kernel ``torch.optim.swa_utils.get_ema_multi_avg_fn`` uses, called
directly because that function is meant for ``AveragedModel``, whose state dict prefixes every key with
``module.`` and adds an ``n_averaged`` buffer, and whose first update copies instead of averaging;
csrgan's EMA state must be a plain generator state dict (``nets["G_ema"]``, read by
:mod:`csrgan.export` and by ``init_from``).

:class:`ModelEMA` is an ``nn.Module`` holding the copy as ``.module`` — the attribute
:func:`csrgan.train.context.unwrap` strips — so the training loop checkpoints, restores, exports and
evaluates it exactly like a DDP-wrapped net, with the generator's own state-dict keys. It is never
DDP-wrapped (every rank averages its own, identical, parameters), never trains (``requires_grad``
False) and stays in eval mode whatever ``train()`` asks (the loop calls ``train()`` on all its nets).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from csrgan.train.context import unwrap

__all__ = ["ModelEMA"]


class ModelEMA(nn.Module):
    """The EMA copy of ``model`` (its plain module: wrappers looked through) with ``decay`` d."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"sr.ema.decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap(model))  # deepcopy: no RNG draw (the seed contract)
        self.module.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> ModelEMA:
        """Always eval mode: the average is a fixed network, never a training one."""
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights (same architecture; DDP and ``torch.compile``
        wrappers looked through)."""
        source = unwrap(model)
        own, new = list(self.module.parameters()), [p.detach() for p in source.parameters()]
        if len(own) != len(new):
            raise ValueError(f"ModelEMA.update: {len(new)} parameters, the EMA has {len(own)}")
        if own:  # parameters are floating point (autograd requires it): lerp applies to all
            torch._foreach_lerp_(own, new, 1.0 - self.decay)
        for a, b in zip(self.module.buffers(), source.buffers(), strict=True):
            a.copy_(b)
