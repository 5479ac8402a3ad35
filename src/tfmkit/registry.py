"""Name -> callable registries (timm-style), so configs can name components.

Each concept (objectives, activations, gene encoders, expression encoders, heads, metrics)
owns one :class:`Registry`; entries are added with the ``@REGISTRY.register("name")``
decorator and looked up with ``REGISTRY.get("name")``. Tests parametrize over
``REGISTRY.names()`` so every new entry is smoke-tested for free.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of components of one kind.

    Parameters
    ----------
    kind
        Human-readable kind ("objective", "gene encoder", ...) used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; a duplicate name is an error."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise a ``KeyError`` listing valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
