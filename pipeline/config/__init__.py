"""One TOML config with a section per stage: defaults (``schema``), file, ``--set`` overrides, validation (``loader``)."""

from pipeline.config.loader import (
    CONFIG_FILENAME,
    OFFICIAL_KNBC_URL,
    SCHEMA,
    Config,
    Setting,
    default_toml,
    load_config,
    parse_override,
    toml_value,
    validate_value,
)

__all__ = [
    "CONFIG_FILENAME",
    "OFFICIAL_KNBC_URL",
    "SCHEMA",
    "Config",
    "Setting",
    "default_toml",
    "load_config",
    "parse_override",
    "toml_value",
    "validate_value",
]
