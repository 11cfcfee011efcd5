"""Hydra config tree of lst (a package so Hydra finds it when a step is imported, not only run).

``methods()`` lists the methods: one file each in ``method/`` and in users' folders (``method_dirs``), read by
the workflow (DAG and config check), the plots and, through Hydra's ``method=<name>`` group choice, the steps
(``register_method_dirs`` makes a user's file a choice). Importing this package stores
the config's types (``lst.conf.schema``) in Hydra's ConfigStore, which ``lst.yaml`` starts from;
``compose()`` composes the config as a step does and ``config_error()`` turns a composition error into
one line naming the key. Torch-free.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lst.conf import schema
from lst.conf.typed import check_ranges
from lst.errors import ConfigError

schema.register()

CONF_DIR = Path(__file__).parent
METHOD_DIR = CONF_DIR / "method"
BASE = "base"  # method/base.yaml: the shared phase-0 model, the steps' default; not a method to run
METHOD_KEYS = ("name", "family", "settings")  # a method block's keys (lst.conf.schema.MethodConfig)
OPTIONAL_METHOD_KEYS = ("loss", "base")  # its classification loss (cross-entropy), its base model (base)


def method_files(dirs: Sequence[str | Path] = ()) -> dict[str, Path]:
    """Every method file by name: ``method/*.yaml`` here, then each folder of ``dirs`` (users' methods), in
    that order. A name defined twice or a folder that does not exist raises :class:`ConfigError`."""
    files = {path.stem: path for path in sorted(METHOD_DIR.glob("*.yaml"))}
    for folder in dirs:
        if not Path(folder).is_dir():
            raise ConfigError(f"method_dirs: {folder}: not a folder")
        for path in sorted(Path(folder).glob("*.yaml")):
            if path.stem in files:
                raise ConfigError(f"{path}: method {path.stem} is defined already, by {files[path.stem]}")
            files[path.stem] = path
    return files


def methods(dirs: Sequence[str | Path] = ()) -> dict[str, dict[str, Any]]:
    """Each method file's ``method`` block by name (the base model first), built-in and in ``dirs``.

    A block has the keys ``name`` (its file's name), ``family`` and ``settings`` (lst.methods checks those);
    a file that breaks this raises :class:`ConfigError` naming it."""
    found = {name: _method_block(path) for name, path in method_files(dirs).items()}
    if BASE not in found:
        raise ConfigError(f"{METHOD_DIR / 'base.yaml'}: missing (the steps' default method)")
    return {BASE: found.pop(BASE), **found}


def check_method_names(names: Sequence[str], dirs: Sequence[str | Path] = ()) -> None:
    """Each of ``names`` a method to run (a file of METHOD_DIR or of ``dirs``, not the base model), else one line
    naming it, with a "did you mean"."""
    known = sorted(set(methods(dirs)) - {BASE})
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"the methods: {', '.join(known)}"
            raise ConfigError(
                f"config methods: {name!r} is not a method ({hint}); a method is a file of {METHOD_DIR} "
                "or of a folder of method_dirs"
            )


def _method_block(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not YAML ({' '.join(str(error).split())})") from None
    block = data.get("method") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: no `method:` block (method: {{name, family, settings}})")
    missing = sorted(set(METHOD_KEYS) - set(block))
    extra = sorted(set(block) - set(METHOD_KEYS) - set(OPTIONAL_METHOD_KEYS))
    if missing or extra:
        raise ConfigError(
            f"{path}: a method block has the keys {', '.join(METHOD_KEYS)}, optionally "
            f"{', '.join(OPTIONAL_METHOD_KEYS)} (missing {missing}, unknown {extra})"
        )
    if block["name"] != path.stem:
        raise ConfigError(f"{path}: method.name is {block['name']!r}, not its file name {path.stem!r}")
    if not isinstance(block["settings"], dict):
        raise ConfigError(f"{path}: method.settings is {block['settings']!r}, not a mapping of settings")
    return block


def register_method_dirs(dirs: Sequence[str | Path]) -> None:
    """Make the method files of ``dirs`` Hydra choices of the ``method`` group (Hydra's ConfigStore, the package
    _global_ as the built-in files say in their first line), so that ``method=<name>`` composes them."""
    from hydra.core.config_store import ConfigStore

    builtin = {path.stem for path in METHOD_DIR.glob("*.yaml")}
    for name, path in method_files(dirs).items():
        if name not in builtin:
            _method_block(path)
            ConfigStore.instance().store(group="method", name=name, node=OmegaConf.load(path), package="_global_")


def method_dirs(overrides: Sequence[str]) -> list[str]:
    """The ``method_dirs=[...]`` of Hydra ``overrides``, [] without one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group == "method_dirs":
            value = override.value()
            return [str(folder) for folder in (value if isinstance(value, list) else [value])]
    return []


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config a step composes with ``overrides`` (Hydra override syntax), resolved, as plain values.

    A key that the schema lacks, a value of the wrong type or outside its choices, or a value left unset
    raises :class:`ConfigError` naming the key."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        register_method_dirs(method_dirs(overrides))
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose("lst", overrides=list(overrides))
        values = to_values(cfg)
    except (HydraException, OmegaConfBaseException) as error:
        raise config_error(error) from None
    _check_model_overrides(cfg)
    check_ranges(values, schema.LstConfig)
    check_ranges(values["model"], schema.SmallModelConfig, "model.")  # the small backbone's widths too
    return values


def _check_model_overrides(cfg: DictConfig) -> None:
    """train_phase.model_overrides: keys of ``model`` (a dict in the schema, so checked here), of their types."""
    key = "train_phase.model_overrides"
    overrides = cfg.train_phase.model_overrides
    for name in overrides:
        if name not in cfg.model:
            close = difflib.get_close_matches(str(name), list(cfg.model), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{key}.{name}: not a key of model{hint}")
    try:
        OmegaConf.merge(cfg.model, overrides)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{key}.{error.key}: {str(error.msg).splitlines()[0]}") from None


def to_values(cfg: DictConfig) -> dict[str, Any]:
    """A composed config as plain values: interpolations resolved, choices as their names; unset raises."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=True)


def config_error(error: Exception) -> ConfigError:
    """One line for an error of composing the config: the key, the problem, and the override or file it came from.

    Hydra reports a value from an override with the OmegaConf error as its cause, and one from a yaml file
    as text (``In 'preset/x': ... full_key: ...``): both are read from their text."""
    text = str(error) + ("\n" + str(error.__cause__) if isinstance(error.__cause__, OmegaConfBaseException) else "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = next((line.removeprefix("full_key: ") for line in lines if line.startswith("full_key: ")), None)
    if key is None:  # an error of Hydra's own: an unknown preset, an override that does not parse
        return ConfigError(f"config: {' '.join(text.split('Config search path')[0].split())}")
    where = _where(lines[0])
    problem = next((line for line in lines[1:] if not _HYDRA_LINE.match(line)), lines[0])
    parent, _, name = key.rpartition(".")
    choice = _field_type(key)
    invalid = re.match(r"Invalid value '(.*)', expected one of", problem)
    if re.match(r"Key '.*' (not in|is not in struct)", problem):
        known = _field_names(parent)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f" (its keys: {', '.join(known)})" if known else ""
        problem = f"not a key of {parent or 'the config'}{hint}"
        if parent == "method.settings":  # a dict: what the method's file sets; its family's Settings check it
            problem = f"not set by the method's file (a setting of its family is added as +{key}=...)"
    elif invalid and isinstance(choice, type) and issubclass(choice, Enum):
        problem = f"{invalid.group(1)!r} is not one of {', '.join(schema.choices(choice))}"
    return ConfigError(f"{key}: {problem}" + (f" ({where})" if where else ""))


# lines of Hydra's reports that say where, not what: the override, the file, how to append, the node's types
_HYDRA_LINE = re.compile(r"(Could not override|Error merging override|To append|In '|\S+ raised while|\w+_type=)")


def _where(first_line: str) -> str:
    """The source of a bad value from the first line of Hydra's report: ``override k=v`` or ``<group>/<name>.yaml``."""
    override = re.match(r"(?:Could not override '(.*)'|Error merging override (.*))", first_line)
    if override:
        return f"override {override.group(1) or override.group(2)}".rstrip(".")
    source = re.match(r"In '(.*)':", first_line)
    return f"{source.group(1)}.yaml" if source else ""


def _field_type(key: str) -> Any:
    """The schema's type of the dotted ``key`` (None where the schema has no dataclass field for it)."""
    node: Any = schema.LstConfig
    for part in key.split("."):
        fields = getattr(node, "__dataclass_fields__", {})
        if part not in fields:
            return None
        node = fields[part].type
        node = getattr(schema, node, node) if isinstance(node, str) else node
    return node


def _field_names(key: str) -> list[str]:
    """The schema's keys under the dotted ``key`` ("" for the top), none where it is not a dataclass."""
    node = _field_type(key) if key else schema.LstConfig
    return list(getattr(node, "__dataclass_fields__", {}))
