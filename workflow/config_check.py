"""The config checked against its JSON schema, each problem told in one line with its fix.

Snakemake's own ``validate`` prints the whole schema after the first problem (about 1,200 lines
for ours), so a misspelled key drowns in it. This check runs first and reports every problem as
the key path, what is wrong, what the schema expects and, for a misspelled key or value, the
nearest valid one. Snakemake's ``validate`` then only fills in the schema's defaults.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match


class ConfigError(ValueError):
    """A config that does not match its schema, worded for the person who wrote it."""


def _key_path(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _nearest(word: str, choices: Iterable[Any]) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(err: ValidationError) -> list[str]:
    """The lines of one schema violation: one per unknown key, else one."""
    where = _key_path(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        known = list(err.schema.get("properties", {}))
        unknown = [k for k in err.instance if k not in known]
        return [
            f"{_key_path([*err.absolute_path, key])}: unknown key{_nearest(key, known)} "
            f"(keys of {where}: {', '.join(known)})"
            for key in unknown
        ]
    if err.validator == "enum":
        choices = err.validator_value
        return [f"{where}: {err.instance!r} is not one of {choices}{_nearest(err.instance, choices)}"]
    about = err.schema.get("description") if isinstance(err.schema, Mapping) else None
    expected = f"; expected: {' '.join(about.split())}" if about else ""
    return [f"{where}: {err.message}{expected}"]


def config_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every violation of the schema, one line each (alternatives reduced to their best match)."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [line for err in errors for line in _describe(best_match(err.context) if err.context else err)]


def check_config(config: Mapping[str, Any], schema_path: str | Path, sources: Sequence[str]) -> None:
    """Raise ConfigError listing every problem of the config, or return if it matches its schema."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = config_problems(config, schema)
    if problems:
        raise ConfigError(
            f"config ({', '.join(sources)}): {len(problems)} problem(s); keys and choices are explained "
            "in config/README.md:\n  " + "\n  ".join(problems)
        )
