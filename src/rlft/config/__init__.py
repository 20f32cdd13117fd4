"""Configuration: frozen dataclass schemas per training kind (rl, sft, preference, distill,
pipeline; `common` holds what they share) and the loader that fills them from YAML files and
`key=value` overrides (`rlft.config.loader`), re-exported here."""

from rlft.config.loader import (
    ConfigError,
    build,
    field,
    field_docs,
    load_config,
    load_yaml,
    merge_overrides,
    to_dict,
    to_yaml,
)

__all__ = [
    "ConfigError",
    "build",
    "field",
    "field_docs",
    "load_config",
    "load_yaml",
    "merge_overrides",
    "to_dict",
    "to_yaml",
]
