"""Hydra config tree of lst (a package so Hydra finds it when a step is imported, not only run).

``methods()`` lists the methods: one file each in ``method/``, read by the workflow (DAG and config check),
the plots and, through Hydra's ``method=<name>`` group choice, the steps. Importing this package stores
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
from lst.errors import ConfigError

schema.register()

CONF_DIR = Path(__file__).parent
METHOD_DIR = CONF_DIR / "method"
BASE = "base"  # method/base.yaml: the shared phase-0 model, the steps' default; not a method to run
KINDS = tuple(kind for kind in schema.choices(schema.MethodKind) if kind != BASE)  # what a method is


def methods() -> dict[str, dict[str, Any]]:
    """Each method file's ``method`` block by name: the base model first, then the methods by name.

    Every file declares the keys of ``base.yaml``, its ``name`` is its file name and its ``kind`` is one
    of ``KINDS``; a file that breaks this raises ``ValueError`` naming it.
    """
    found = {path.stem: _method_block(path) for path in sorted(METHOD_DIR.glob("*.yaml"))}
    if BASE not in found:
        raise ValueError(f"{METHOD_DIR / 'base.yaml'}: missing (the steps' default method)")
    keys = set(found[BASE])
    for name, block in found.items():
        path = METHOD_DIR / f"{name}.yaml"
        if set(block) != keys:
            missing, extra = sorted(keys - set(block)), sorted(set(block) - keys)
            raise ValueError(f"{path}: method keys differ from base.yaml's (missing {missing}, unknown {extra})")
        if block["name"] != name:
            raise ValueError(f"{path}: method.name is {block['name']!r}, not its file name {name!r}")
        if name != BASE and block["kind"] not in KINDS:
            raise ValueError(f"{path}: method.kind is {block['kind']!r}, not one of {KINDS}")
    return {BASE: found.pop(BASE), **found}


def _method_block(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data.get("method"), dict):
        raise ValueError(f"{path}: no `method:` block (a method file starts with `# @package _global_`)")
    return data["method"]


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config a step composes with ``overrides`` (Hydra override syntax), resolved, as plain values.

    A key that the schema lacks, a value of the wrong type or outside its choices, or a value left unset
    raises :class:`ConfigError` naming the key."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose("lst", overrides=list(overrides))
        values = to_values(cfg)
    except (HydraException, OmegaConfBaseException) as error:
        raise config_error(error) from None
    _check_model_overrides(cfg)
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
