"""Name -> constructor registries: everything an experiment file names is built through one of these.

Idea from BasicSR's ``utils/registry.py``: a small dict with clear errors. An unknown name lists the
known ones, and registering a name twice is a programming error, not a silent override.

The registries of csrgan live here, at the bottom of the import graph, so that the config schema can
validate names and arguments without importing torch; each registry imports the modules that fill it
(``discover``) the first time it is asked for a name:

==========================  =============================  ==============================================
registry                    config field                   filled by
==========================  =============================  ==============================================
``SR_GENERATORS``           ``sr.generator.type``          :mod:`csrgan.models` (``srresnet``, ``rrdb``)
``SR_DISCRIMINATORS``       ``sr.discriminator.type``      :mod:`csrgan.models` (``srgan``, ``vgg128``)
``DEGRADATION_GENERATORS``  ``cyclegan.generator.type``    :mod:`csrgan.models` (``resnet``)
``DEGRADATION_CRITICS``     ``cyclegan.discriminator.type``  :mod:`csrgan.models` (``patchgan``)
``LOSSES``                  ``sr.pretrain.loss``, ``sr.gan.content.type``  :mod:`csrgan.losses`
``GAN_LOSSES``              ``sr.gan.gan_mode``            :mod:`csrgan.losses` (vanilla, lsgan, ragan)
``METRICS``                 ``eval.metrics``, ``search.metric.name``  :mod:`csrgan.metrics`
``DEGRADATIONS``            degradation pipeline steps     :mod:`csrgan.data.degradations`
``SCHEDULES``               ``sr.pretrain.schedule``,      :mod:`csrgan.train.schedules` (``constant``,
                            ``sr.gan.schedule``            ``multistep``, ``cosine``)
==========================  =============================  ==============================================

A constructor's keyword arguments are its YAML arguments: ``{type: srresnet, channels: 32}`` is
``SRResNet(channels=32, ...)``. :meth:`Registry.validate` checks them against the constructor's signature
and type hints (with pydantic) when the config is loaded, so a typo or a wrong type is an exit-2 error
before anything runs. Arguments listed as ``injected`` when registering are filled in by csrgan (the
data scale, the discriminator's patch size, where the VGG weights are) and refused in YAML.
Every submodule of ``csrgan.models`` is imported on discovery, so a new network is one registered
class in a new file there; out-of-tree code is imported with the experiment's ``plugins:`` list.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown or duplicate name, or bad arguments. ``str()`` is a complete, user-facing message.

    A ``KeyError`` (a name lookup failed) and a ``ValueError`` (the config named something wrong)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class _Entry:
    obj: Any
    injected: tuple[str, ...]


class Registry:
    """A named mapping of constructors (or descriptors).

    >>> blur = Registry("degradation")
    >>> @blur.register("gaussian_blur")
    ... def make(sigma: float): ...
    >>> blur.get("gaussian_blur") is make
    True
    """

    def __init__(self, kind: str, discover: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._discover = discover
        self._discovered = not discover
        self._items: dict[str, _Entry] = {}
        self._schemas: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------- filling
    def register(self, name: str | None = None, *, injected: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")``. ``injected``: arguments csrgan fills in, not YAML."""

        def deco(obj: T) -> T:
            self.add(name or obj.__name__, obj, injected=injected)  # type: ignore[attr-defined]
            return obj

        return deco

    def add(self, name: str, obj: Any, *, injected: tuple[str, ...] = ()) -> None:
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._items[name] = _Entry(obj, tuple(injected))

    def _ensure_discovered(self) -> None:
        """Import the modules that register into this registry (once; re-entrant while importing)."""
        if self._discovered:
            return
        self._discovered = True
        try:
            for module in self._discover:
                mod = importlib.import_module(module)
                for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
                    importlib.import_module(f"{module}.{info.name}")
        except BaseException:
            self._discovered = False
            raise

    # ---------------------------------------------------------------------------------- looking up
    def _entry(self, name: str) -> _Entry:
        self._ensure_discovered()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def get(self, name: str) -> Any:
        return self._entry(name).obj

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def injected(self, name: str) -> tuple[str, ...]:
        """The arguments of ``name`` that csrgan fills in (never in YAML)."""
        return self._entry(name).injected

    def build_with(self, name: str, kwargs: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
        """``name(**kwargs)`` plus the injected arguments it declares, taken from ``context``."""
        needed = self.injected(name)
        missing = sorted(set(needed) - set(context))
        if missing:
            raise RegistryError(f"{self.kind} {name!r} needs {missing}, which the caller did not provide")
        return self.build(name, **kwargs, **{k: context[k] for k in needed})

    def names(self) -> list[str]:
        self._ensure_discovered()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # ---------------------------------------------------------------------------------- arguments
    def arguments(self, name: str) -> dict[str, inspect.Parameter]:
        """The YAML arguments of ``name``: its constructor's keyword parameters minus the injected ones."""
        entry = self._entry(name)
        params = inspect.signature(entry.obj).parameters
        return {
            k: p
            for k, p in params.items()
            if k not in entry.injected and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def validate(self, name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``kwargs`` checked against ``name``'s constructor; returns them with every default filled in.

        Raises :class:`RegistryError` naming the argument: unknown, injected, missing or of the wrong type.
        """
        entry = self._entry(name)
        given = dict(kwargs)
        fixed = sorted(set(given) & set(entry.injected))
        if fixed:
            raise RegistryError(f"{self.kind} {name!r}: {fixed} are set by csrgan, not in the config")
        args = self.arguments(name)
        unknown = sorted(set(given) - set(args))
        if unknown:
            known = ", ".join(args) or "(none)"
            raise RegistryError(f"{self.kind} {name!r} has no argument(s) {unknown}; its arguments: {known}")
        from pydantic import ValidationError

        try:
            model = self._schema(name, args).model_validate(given)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()
            )
            raise RegistryError(f"{self.kind} {name!r}: {problems}") from None
        return model.model_dump()

    def _schema(self, name: str, args: Mapping[str, inspect.Parameter]) -> Any:
        """A pydantic model of ``name``'s arguments, from the constructor's signature and type hints."""
        if name not in self._schemas:
            from pydantic import ConfigDict, create_model

            obj = self.get(name)
            target = obj.__init__ if inspect.isclass(obj) else obj
            hints = typing.get_type_hints(target)
            fields = {
                k: (hints.get(k, Any), ... if p.default is p.empty else p.default) for k, p in args.items()
            }
            self._schemas[name] = create_model(  # type: ignore[call-overload]
                f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
            )
        return self._schemas[name]


# ------------------------------------------------------------------------------- csrgan's registries
SR_GENERATORS = Registry("SR generator", discover=("csrgan.models",))
SR_DISCRIMINATORS = Registry("SR discriminator", discover=("csrgan.models",))
DEGRADATION_GENERATORS = Registry("degradation generator", discover=("csrgan.models",))
DEGRADATION_CRITICS = Registry("degradation discriminator", discover=("csrgan.models",))
LOSSES = Registry("loss", discover=("csrgan.losses",))
GAN_LOSSES = Registry("GAN loss", discover=("csrgan.losses",))
METRICS = Registry("metric", discover=("csrgan.metrics",))
DEGRADATIONS = Registry("degradation", discover=("csrgan.data.degradations",))
SCHEDULES = Registry("learning-rate schedule", discover=("csrgan.train.schedules",))
