"""Load and validate the YAML configuration file, reporting every problem with its key path and line number."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ledgerbridge.config.schema import ConfigIssue, KeyPath, LedgerbridgeConfig, cross_check, format_path
from ledgerbridge.config.secrets import SecretResolutionError

__all__ = [
    "ConfigError",
    "default_config",
    "load_config",
    "load_config_text",
    "starter_text",
    "validate_file",
    "validate_text",
]

STARTER_RESOURCE = "starter.yaml"
#: libyaml's safe loader when PyYAML was built with it (7x faster), else the pure-Python one. Both give positions.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(ValueError):
    """The configuration file has problems; ``issues`` lists each with key path and line."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{source}: {len(issues)} configuration problem(s):\n{lines}")


# --------------------------------------------------------------------------- YAML with positions


def _line_map(node: yaml.Node, issues: list[ConfigIssue]) -> dict[KeyPath, int]:
    """Key path -> 1-based line of the key (mappings) or item (sequences). Duplicate keys become issues."""
    lines: dict[KeyPath, int] = {(): node.start_mark.line + 1}

    def walk(n: yaml.Node, path: KeyPath) -> None:
        if isinstance(n, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                sub = (*path, key)
                if key in first:
                    issues.append(ConfigIssue(format_path(sub), line, f"duplicate key {key!r} (first at line "
                                              f"{first[key]}); YAML would silently keep only the last one"))
                else:
                    first[key] = line
                lines[sub] = line
                walk(value_node, sub)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    walk(node, ())
    return lines


def _line_for(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _parse_yaml(text: str, issues: list[ConfigIssue]) -> tuple[Any, dict[KeyPath, int]]:
    try:
        node = yaml.compose(text, Loader=_LOADER)
        data = yaml.load(text, Loader=_LOADER)  # a safe loader: plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context or ""
        if context and exc.context_mark is not None and exc.context_mark is not mark:
            context += f" (started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        what = "; ".join(p for p in (context, exc.problem) if p) or "invalid YAML"
        if mark is not None:
            issues.append(ConfigIssue("", mark.line + 1, f"YAML syntax error: {what} (line {mark.line + 1}, "
                                      f"column {mark.column + 1})"))
        else:
            issues.append(ConfigIssue("", None, f"YAML syntax error: {what}"))
        return None, {}
    except yaml.YAMLError as exc:
        issues.append(ConfigIssue("", None, f"YAML error: {exc}"))
        return None, {}
    if node is None:
        return None, {}
    return data, _line_map(node, issues)


# --------------------------------------------------------------------------- pydantic errors -> key paths


def _data_path(data: Any, loc: tuple[int | str, ...]) -> KeyPath:
    """Map a pydantic ``loc`` onto the data: drop union/validator tags that are not keys of the document."""
    out: list[str | int] = []
    node = data
    for k, part in enumerate(loc):
        last = k == len(loc) - 1
        if isinstance(node, Mapping):
            match = next((key for key in node if key == part or str(key) == str(part)), None)
            if match is not None:
                out.append(str(match))
                node = node[match]
                continue
            if last:  # a missing (or unknown) key of this mapping
                out.append(str(part))
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
            continue
        # a leaf: remaining parts are validator tags
    return tuple(out)


def _model_at(path: KeyPath) -> type[BaseModel] | None:
    """The model class that parses the mapping at ``path`` (for listing allowed keys)."""
    tp: Any = LedgerbridgeConfig
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _message(err: Mapping[str, Any], path: KeyPath) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        model = _model_at(path[:-1])
        allowed = ", ".join(model.model_fields) if model is not None else ""
        return f"unknown key {path[-1]!r}" + (f"; allowed here: {allowed}" if allowed else "") if path else msg
    if kind == "missing":
        return "required key is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


# --------------------------------------------------------------------------- public API


def _validate(
    text: str, base_dir: Path | None, check_secrets: bool
) -> tuple[LedgerbridgeConfig | None, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    data, lines = _parse_yaml(text, issues)
    if issues and data is None:
        return None, issues
    if data is None:
        return None, [ConfigIssue("", None, "the file is empty: start from `ledgerbridge init`")]
    if not isinstance(data, dict):
        return None, [ConfigIssue("", 1, "the top level must be a mapping of sections (store, runtime, systems, ...)")]
    ctx = {"skip_cross_check": True, "base_dir": str(base_dir) if base_dir else None}
    try:
        cfg = LedgerbridgeConfig.model_validate(data, context=ctx)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            path = _data_path(data, tuple(err["loc"]))
            issues.append(ConfigIssue(format_path(path), _line_for(lines, path), _message(err, path)))
        return None, _sorted(issues)
    for path, message in cross_check(cfg):
        issues.append(ConfigIssue(format_path(path), _line_for(lines, path), message))
    if check_secrets:
        for path, ref in cfg.secret_refs():
            try:
                ref.reveal()
            except SecretResolutionError as exc:
                text_msg = str(exc)
                prefix = f"{format_path(path)}: "
                issues.append(ConfigIssue(format_path(path), _line_for(lines, path), text_msg.removeprefix(prefix)))
    return (None if issues else cfg), _sorted(issues)


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return sorted(issues, key=lambda i: (i.line if i.line is not None else 0, i.path))


def validate_text(text: str, *, base_dir: Path | None = None, check_secrets: bool = False) -> list[ConfigIssue]:
    """Every problem in a configuration given as YAML text (empty list when valid)."""
    return _validate(text, base_dir, check_secrets)[1]


def _read(p: Path) -> tuple[str | None, list[ConfigIssue]]:
    try:
        return p.read_text(encoding="utf-8"), []
    except FileNotFoundError:
        return None, [ConfigIssue("", None, f"{p}: file not found (create one with `ledgerbridge init`)")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigIssue("", None, f"{p}: cannot be read ({exc})")]


def validate_file(path: str | Path, *, check_secrets: bool = False) -> list[ConfigIssue]:
    """Every problem in the configuration file at ``path``: YAML syntax (line/column), types, unknown keys,
    cross-references; with ``check_secrets`` also secret references that do not resolve. Empty when valid."""
    p = Path(path)
    text, issues = _read(p)
    if text is None:
        return issues
    return _validate(text, p.resolve().parent, check_secrets)[1]


def load_config_text(text: str, *, base_dir: Path | None = None, source: str = "<config>") -> LedgerbridgeConfig:
    """Parse and validate YAML text; raise :class:`ConfigError` listing every problem."""
    cfg, issues = _validate(text, base_dir, False)
    if cfg is None:
        raise ConfigError(source, issues)
    return cfg


def load_config(path: str | Path) -> LedgerbridgeConfig:
    """Load the configuration file at ``path``; raise :class:`ConfigError` listing every problem.

    Relative ``${file:...}`` secret references resolve against the file's directory. Secrets are not resolved here:
    call ``.reveal()`` (or ``SystemConfig.secret(name)``) where the value is needed.
    """
    p = Path(path)
    text, issues = _read(p)
    if text is None:
        raise ConfigError(str(p), issues)
    return load_config_text(text, base_dir=p.resolve().parent, source=str(p))


def starter_text() -> str:
    """The commented starter configuration shipped with the package (what ``ledgerbridge init`` writes)."""
    return resources.files("ledgerbridge.config").joinpath(STARTER_RESOURCE).read_text(encoding="utf-8")


def default_config() -> LedgerbridgeConfig:
    """The starter configuration as a validated object: the chart.md posting rules and account roles, one embedded
    SQLite setup with a ``beancount`` ledger system (``ledger``) and a ``file`` PSA source (``psa_files``)."""
    return load_config_text(starter_text(), base_dir=Path.cwd(), source=f"ledgerbridge/config/{STARTER_RESOURCE}")
