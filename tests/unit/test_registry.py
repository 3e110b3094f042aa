import dataclasses
from pathlib import Path

import pytest
import yaml

import embodied_mem.configs
from embodied_mem.registry import build, config_class, names

CONFIGS = Path(embodied_mem.configs.__file__).parent


def test_every_memory_config_file_mirrors_its_dataclass():
    files = sorted((CONFIGS / "memory").glob("*.yaml"))
    assert {f.stem for f in files} == set(names("memory"))
    for path in files:
        values = yaml.safe_load(path.read_text())
        assert values["name"] == path.stem
        def default(f):
            if f.default is not dataclasses.MISSING:
                return f.default
            value = f.default_factory()
            return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value

        fields = {f.name: default(f) for f in dataclasses.fields(config_class("memory", path.stem))}
        assert set(values) - {"name"} == set(fields), path.name
        for key, value in values.items():
            if key != "name" and not isinstance(value, list):
                assert value == fields[key], f"{path.name}: {key} differs from the dataclass default"


def test_unknown_memory_and_unknown_key_are_clear_errors():
    with pytest.raises(ValueError, match="unknown memory 'nope'"):
        build("memory", {"name": "nope"})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['colour'\]"):
        build("memory", {"name": "frame_bank", "encoder": "gt_hash", "colour": 1})
    with pytest.raises(ValueError, match="needs a 'name'"):
        build("memory", {"encoder": "gt_hash"})


def test_the_simulator_never_imports_the_memories():
    """Adapters import the library, never the memories' internals (sim/ sits beside memory/)."""
    import re

    root = Path(__file__).resolve().parents[2] / "sim"
    offenders = [str(p) for p in root.rglob("*.py") if re.search(r"^\s*(from|import) embodied_mem\.memory", p.read_text(), re.M)]
    assert offenders == []
