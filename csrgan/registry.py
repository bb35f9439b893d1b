"""Name -> constructor registries, so YAML can name losses, degradations, test sets and models.

Idea from BasicSR's ``utils/registry.py``: a small dict with clear errors. An unknown name lists the
known ones, and registering a name twice is a programming error, not a silent override.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class RegistryError(KeyError):
    """An unknown or duplicate name. ``str()`` is a complete, user-facing message."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    """A named mapping of constructors.

    >>> blur = Registry("degradation")
    >>> @blur.register("gaussian_blur")
    ... def make(sigma: float): ...
    >>> blur.get("gaussian_blur") is make
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise RegistryError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
