"""Configuration: frozen dataclasses hold the defaults; YAML files and ``key=value`` overrides only
override them. Unknown keys are errors that name the key and suggest the closest valid one."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; the message names the key or file."""


def field(default: Any, doc: str) -> Any:
    """A dataclass field with a one-line doc (shown by ``rlft check-config --docs``)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


# the package's own files: built-in configs (`--config demo`) and the example files they use
PACKAGE_DIR = Path(__file__).resolve().parent.parent
BUILTIN_DIR = PACKAGE_DIR / "configs"
PACKAGE_FILE_DIRS = ("examples",)  # relative paths under these fall back to the package's copy


def builtin_configs() -> dict[str, Path]:
    """The built-in configs shipped inside the package, by name (file name without .yaml)."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def resolve_config_path(name: str | Path) -> Path:
    """The config file `name` means: the file itself when it exists (relative to the working
    directory); else a built-in config, named bare (`demo`, `demo.yaml`) or as the checkout
    spells it (`configs/demo.yaml`); else a ConfigError listing the built-in names."""
    p = Path(name)
    if p.is_file():
        return p
    stem = p.name[: -len(p.suffix)] if p.suffix in (".yaml", ".yml") else p.name
    bare = len(p.parts) == 1
    if bare or (not p.is_absolute() and p.parts[:-1] == ("configs",)):
        builtin = builtin_configs().get(stem)
        if builtin is not None:
            return builtin
    kind = "directory, not a file" if p.is_dir() else "file not found"
    names = ", ".join(builtin_configs()) or "none"
    raise ConfigError(f"config {kind}: {p} (built-in configs: {names}; `rlft config list`)")


def _is_builtin(path: Path) -> bool:
    return path.resolve().parent == BUILTIN_DIR


def with_package_files(data: Any) -> Any:
    """A built-in config's relative file references (`examples/rewards.py:fn`, data paths) that
    do not exist in the working directory, pointed at the package's own copy, so the config also
    runs outside the checkout (after `pip install rlft`). Anything that exists here wins."""
    if isinstance(data, dict):
        return {k: with_package_files(v) for k, v in data.items()}
    if isinstance(data, list):
        return [with_package_files(v) for v in data]
    if not isinstance(data, str) or Path(data).is_absolute() or data.split("/")[0] not in PACKAGE_FILE_DIRS:
        return data
    file, sep, rest = data.partition(".py:")  # a reward `path.py:function`
    file = file + ".py" if sep else data
    if Path(file).exists() or not (PACKAGE_DIR / file).exists():
        return data
    return str(PACKAGE_DIR / file) + (":" + rest if sep else "")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a dict; `path` is resolved by `resolve_config_path` (built-in names)."""
    p = resolve_config_path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(data).__name__}")
    return with_package_files(data) if _is_builtin(p) else data


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""


def merge_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a nested dict (values parsed as YAML scalars)."""
    out = _deep_copy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = {}
                node[k] = nxt
            node = nxt
        node[keys[-1]] = value
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build a (nested) frozen dataclass from a mapping, checking keys and types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(prefix + str(key), list(fields), prefix))
        default = fields[key].default
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            value = deep_merge(to_dict(default), value)  # absent keys keep the field's own default
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, Mapping) else v
    return out


def _unknown_key_message(full_key: str, valid: list[str], prefix: str) -> str:
    leaf = full_key[len(prefix) :]
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return f"unknown config key '{full_key}'{hint}"


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"'{key}': bad value {value!r}")
    if origin in (list, tuple, Sequence):
        inner = args[0] if args else Any
        if inner is str and isinstance(value, str):  # `key: a` for a list of strings means [a]
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"'{key}' must be one of {list(args)}, got {value!r}")
        return value
    return _coerce_scalar(tp, value, key)


def _coerce_scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"'{key}' must be a string, got {value!r}")
    return value


def to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def field_docs(cls: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, doc) for every leaf field, for help output. A nested section shows
    its field's own default values (e.g. DPO's lower learning rate), not its class defaults."""
    rows = []
    for f in dataclasses.fields(cls):
        if isinstance(cls, type):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        else:
            default = getattr(cls, f.name)
        if dataclasses.is_dataclass(default):
            rows.extend(field_docs(default, f"{prefix}{f.name}."))
        else:
            rows.append((prefix + f.name, default, f.metadata.get("doc", "")))
    return rows


def load_config(cls: type[T], path: str | None, overrides: Sequence[str] = ()) -> T:
    """`cls` built from the config file `path` (a file, or a built-in config's name: see
    `resolve_config_path`), then the dotted `overrides`."""
    data = load_yaml(path) if path else {}
    data = merge_overrides(data, overrides)
    try:
        return build(cls, data)
    except ConfigError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{e}") from None
