"""One TOML config with a section per stage: typed sections and defaults (``schema``), file, overrides, validation (``loader``)."""

from pipeline.config.loader import CONFIG_FILENAME, Config, default_toml, load_config, parse_override, toml_value, validate_value
from pipeline.config.schema import OFFICIAL_KNBC_URL, SCHEMA, SECTIONS, ClassifierSection, Section, Setting, setting

__all__ = [
    "CONFIG_FILENAME",
    "OFFICIAL_KNBC_URL",
    "SCHEMA",
    "SECTIONS",
    "ClassifierSection",
    "Config",
    "Section",
    "Setting",
    "default_toml",
    "load_config",
    "parse_override",
    "setting",
    "toml_value",
    "validate_value",
]
