"""A registry for pluggable parts (memory systems, encoders, simulators).

    @register("memory", "frame_bank", FrameBankConfig)
    class FrameBank: ...

    memory = build("memory", {"name": "frame_bank", "keep_every": 1})

Each part is registered with a config dataclass. ``build`` turns a plain mapping (a Hydra
node, a dict) into that dataclass and rejects unknown keys with a clear error, so a typo in
a config file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
import importlib
from typing import Any, Callable, Mapping

_REGISTRY: dict[str, dict[str, tuple[Callable[..., Any], type]]] = {}

# Modules that register parts when imported. Importing lazily keeps `import embodied_mem`
# cheap (no torch / Open3D unless a part that needs them is built).
_PROVIDERS = {
    "memory": [
        "embodied_mem.memory.frame_bank",
        "embodied_mem.memory.mem4nav",
        "embodied_mem.memory.snapshots3d",
        "embodied_mem.memory.floors",
        "embodied_mem.stack",
        "embodied_mem.memory.robomemory",
        "embodied_mem.memory.memoryvla",
        "embodied_mem.memory.janus",
        "embodied_mem.memory.m3",
    ],
    "encoder": ["embodied_mem.encoders.text", "embodied_mem.encoders.gt_semantics"],
}


def register(kind: str, name: str, config_class: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator: make ``factory(config)`` buildable as ``build(kind, {"name": name, ...})``."""
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"config for {kind}/{name} must be a dataclass, got {config_class!r}")

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name][0] is not factory:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = (factory, config_class)
        return factory

    return decorate


def _load_providers(kind: str) -> None:
    for module in _PROVIDERS.get(kind, []):
        importlib.import_module(module)


def names(kind: str) -> list[str]:
    """Every registered name of ``kind``, sorted."""
    _load_providers(kind)
    return sorted(_REGISTRY.get(kind, {}))


def config_class(kind: str, name: str) -> type:
    _load_providers(kind)
    try:
        return _REGISTRY[kind][name][1]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; registered: {', '.join(names(kind)) or 'none'}") from None


def make_config(config_type: type, values: Mapping[str, Any], where: str) -> Any:
    """Build a config dataclass from a mapping, naming any unknown key."""
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for {where}; known keys: {sorted(fields)}")
    values = dict(values)
    # Nested config dataclasses (a tracker inside a memory config) come as mappings from YAML.
    types = typing.get_type_hints(config_type)
    for name, value in values.items():
        nested = types.get(name)
        if dataclasses.is_dataclass(nested) and isinstance(value, Mapping):
            values[name] = make_config(nested, value, f"{where}.{name}")
    return config_type(**values)


def build(kind: str, values: Mapping[str, Any] | str, **extra: Any) -> Any:
    """Build the part named ``values["name"]`` with the remaining keys as its config."""
    values = {"name": values} if isinstance(values, str) else dict(values)
    if "name" not in values:
        raise ValueError(f"a {kind} config needs a 'name' key; got keys {sorted(values)}")
    name = values.pop("name")
    factory = _lookup(kind, name)
    config = make_config(config_class(kind, name), values, f"{kind} {name!r}")
    return factory(config, **extra)


def _lookup(kind: str, name: str) -> Callable[..., Any]:
    _load_providers(kind)
    try:
        return _REGISTRY[kind][name][0]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; registered: {', '.join(names(kind)) or 'none'}") from None
