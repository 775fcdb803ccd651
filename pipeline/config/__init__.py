"""One TOML config with a section per stage: typed sections and defaults (``schema``), file, overrides, validation (``loader``)."""

from pipeline.config.loader import CONFIG_FILENAME, Config, default_toml, load_config, parse_override, task_toml, toml_value, validate_value
from pipeline.config.schema import OFFICIAL_KNBC_URL, SCHEMA, SECTIONS, ClassifierSection, Section, Setting, setting
from pipeline.config.tasks import BUILTIN_TASKS, KNBC_DATA, TaskSection, check_task_name, make_task

__all__ = [
    "BUILTIN_TASKS",
    "CONFIG_FILENAME",
    "KNBC_DATA",
    "OFFICIAL_KNBC_URL",
    "SCHEMA",
    "SECTIONS",
    "ClassifierSection",
    "Config",
    "Section",
    "Setting",
    "TaskSection",
    "check_task_name",
    "default_toml",
    "load_config",
    "make_task",
    "parse_override",
    "setting",
    "task_toml",
    "toml_value",
    "validate_value",
]
