"""YAML loading with `${ENV}` expansion and one clear message per invalid file."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
Model = TypeVar("Model", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid; the message names file and key."""


def expand_env(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace `${NAME}` in every string of a YAML tree; an unset variable becomes empty."""
    if isinstance(value, str):
        names = os.environ if environ is None else environ
        expanded = ENV_REFERENCE.sub(lambda m: names.get(m.group(1), ""), value)
        return None if expanded == "" and value != "" else expanded
    if isinstance(value, dict):
        return {key: expand_env(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, environ) for item in value]
    return value


def read_yaml(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return expand_env(data, environ)


def validate(model: type[Model], data: dict[str, Any], path: Path) -> Model:
    """Validate `data` against `model`; the first error becomes `file: key: what is wrong`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(_keys_of(error["loc"], data)) or "(top level)"
        value = f" (got {error['input']!r})" if _is_scalar(error.get("input")) else ""
        raise ConfigError(f"{path}: {key}: {error['msg']}{value}") from exc


def _keys_of(loc: tuple[Any, ...], data: Any) -> list[str]:
    """The file's keys along an error's location, without the tags pydantic adds for a
    discriminated union (`llm.scripted.intentz` is `llm.intentz` in the file)."""
    keys: list[str] = []
    node = data
    for n, part in enumerate(loc):
        is_tag = isinstance(node, dict) and part not in node and n < len(loc) - 1
        if is_tag:
            continue
        keys.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return keys


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) < 80
