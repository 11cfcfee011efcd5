"""Methods by name: a method file's family (a module of lst.methods or of a user's folder) and its typed settings.

``load_method(block, dirs)`` turns a composed ``method`` block (``{name, family, settings, loss, base}``) into
the family's :class:`~lst.methods.method.Method`, its settings and its loss's settings checked
(lst.conf.typed): an unknown family or loss, a setting it does not have, a value of the wrong type or out of
range, or a user's module that does not import is one line (:class:`lst.errors.ConfigError`) naming the key or
the file. Torch-free.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from lst.conf.typed import settings_from
from lst.errors import ConfigError
from lst.losses import checked_settings
from lst.methods.method import BASE, LossChoice, Method

PACKAGE_DIR = Path(__file__).parent
USER_PACKAGE = "lst_user_methods"  # the modules of users' folders are imported as lst_user_methods.<family>


# the modules of lst.methods that hold no family: the machinery and the families' torch-side code
HELPERS = {"method", "registry", "teacher", "logit_distillation", "meta_module"}


def builtin_families() -> list[str]:
    """The families of lst.methods, by module name."""
    return sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if not p.stem.startswith("_") and p.stem not in HELPERS)


def load_method(block: Mapping[str, Any], dirs: Sequence[str | Path] = (), config: Mapping[str, Any] | None = None):
    """The method of a composed ``method`` block, its settings checked; ``config``: the step's settings."""
    cls = family_class(block["family"], dirs)
    settings = settings_from(cls.Settings, block.get("settings"), "method.settings")
    given = block.get("loss") or {}
    name = given.get("name", LossChoice.name)  # a block composed without the schema's defaults
    loss = LossChoice(name, checked_settings(name, given.get("settings"), "method.loss"))
    return cls(block["name"], settings, config, loss, block.get("base", BASE))


def family_class(family: str, dirs: Sequence[str | Path] = ()) -> type[Method]:
    """The Method subclass of ``family``: the module lst.methods.<family>, else <dir>/<family>.py of a folder
    of ``dirs`` (a user's methods)."""
    if family in builtin_families():
        module = importlib.import_module(f"lst.methods.{family}")
    else:
        paths = [Path(folder) / f"{family}.py" for folder in dirs]
        found = [path for path in paths if path.is_file()]
        if not found:
            known = builtin_families() + sorted(p.stem for folder in dirs for p in Path(folder).glob("*.py"))
            close = difflib.get_close_matches(family, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"the families: {', '.join(known)}"
            where = f" nor a file of method_dirs {[str(d) for d in dirs]}" if dirs else " (no method_dirs given)"
            raise ConfigError(f"method.family: {family!r} is not a module of lst.methods{where} ({hint})")
        module = _import_user_module(found[0])
    return _family_of(module)


def _import_user_module(path: Path) -> ModuleType:
    name = f"{USER_PACKAGE}.{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a user's file: whatever it raises, one line naming it
        del sys.modules[name]
        line = f" (line {error.lineno})" if isinstance(error, SyntaxError) else ""
        raise ConfigError(f"{path}: does not import{line}: {type(error).__name__}: {error}") from None
    return module


def _family_of(module: ModuleType) -> type[Method]:
    """The one Method subclass that ``module`` defines."""
    defined = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Method) and cls is not Method and cls.__module__ == module.__name__
    ]
    if len(defined) != 1:
        names = ", ".join(cls.__name__ for cls in defined) or "none"
        raise ConfigError(f"{module.__file__}: a family module defines one subclass of lst.methods.Method ({names})")
    return defined[0]
