"""A name -> entry table whose entries are registered once: the shape every registry in prada_jax.sim shares
(schedulers, collaboration protocols, latency models, policies, table kinds, parameters)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A name registered twice, or a registration that refers to something unknown (the policy, table kind and
    system parameter registries; prada_jax.sim.registry)."""


class Registry(dict, Generic[T]):
    """A dict of `kind` entries by name: `add` refuses a second registration, `lookup` names the known ones.

    `error` is the exception type raised (ValueError by default; the policy registry uses its own)."""

    def __init__(self, kind: str, error: type[Exception] = ValueError):
        super().__init__()
        self.kind, self.error = kind, error

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise self.error(f"{self.kind} {name!r} is already registered")
        self[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; registered: {sorted(self)}") from None
