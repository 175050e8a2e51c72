"""Secret references: ``${env:NAME}`` and ``${file:PATH}``, never clear values in the configuration file.

A :class:`SecretRef` holds only the *reference*. ``repr``, ``str``, ``model_dump`` and ``model_dump_json`` show
the reference; the clear value exists only in the string returned by an explicit :meth:`SecretRef.reveal` call and
is never cached on the object.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

__all__ = ["SecretRef", "SecretResolutionError", "has_reference"]

_ANY_REF = re.compile(r"\$\{([^}:]*):([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SOURCES = ("env", "file")
HOW = "write a reference instead: ${env:NAME} (environment variable) or ${file:PATH} (file holding the value)"


class SecretResolutionError(LookupError):
    """A secret reference could not be resolved. The message names the key path and the reference, never a value."""


def has_reference(text: str) -> bool:
    return "${" in text


class SecretRef:
    """A reference to a secret held outside the configuration file.

    ``${env:NAME}`` reads environment variable ``NAME``; ``${file:PATH}`` reads the file (relative paths resolve
    against the configuration file's directory; one trailing newline is dropped, as Docker/Kubernetes secret files
    usually end with one). With ``template=True`` (database URLs) the references may sit inside other text, e.g.
    ``postgresql://app:${env:PGPASSWORD}@db/ledger``.
    """

    __slots__ = ("_base_dir", "_key_path", "_reference")

    def __init__(self, reference: str, *, template: bool = False, key_path: str = "", base_dir: Path | None = None):
        if not isinstance(reference, str):
            raise TypeError("a secret reference is a string such as ${env:NAME}")
        refs = list(_ANY_REF.finditer(reference))
        if not refs:
            raise ValueError(f"plain secret values are refused in configuration; {HOW}")
        if not template and (len(refs) != 1 or refs[0].span() != (0, len(reference))):
            raise ValueError(f"a secret must be exactly one reference, nothing around it; {HOW}")
        if reference.count("${") != len(refs):
            raise ValueError(f"malformed secret reference (unclosed or empty '${{'); {HOW}")
        for m in refs:
            source, arg = m.group(1), m.group(2)
            if source not in _SOURCES:
                raise ValueError(f"unknown secret source {source!r} in {m.group(0)}: use env or file")
            if source == "env" and not _ENV_NAME.match(arg):
                raise ValueError(f"{m.group(0)}: environment variable names are letters, digits and _")
            if source == "file" and not arg.strip():
                raise ValueError(f"{m.group(0)}: the file path is empty")
        self._reference = reference
        self._key_path = key_path
        self._base_dir = base_dir

    # ---- identity: the reference, never the value
    @property
    def reference(self) -> str:
        return self._reference

    @property
    def key_path(self) -> str:
        return self._key_path

    def bind(self, key_path: str, base_dir: Path | None = None) -> None:
        """Record where this reference sits in the configuration (for error messages) and the file's directory."""
        self._key_path = key_path
        if base_dir is not None:
            self._base_dir = base_dir

    def __repr__(self) -> str:
        return f"SecretRef({self._reference!r})"

    def __str__(self) -> str:
        return self._reference

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other._reference == self._reference

    def __hash__(self) -> int:
        return hash(("SecretRef", self._reference))

    # ---- resolution
    def reveal(self) -> str:
        """Resolve the reference(s) and return the clear value. Raises :class:`SecretResolutionError`."""
        return _ANY_REF.sub(lambda m: self._resolve_one(m.group(1), m.group(2), m.group(0)), self._reference)

    def _resolve_one(self, source: str, arg: str, ref: str) -> str:
        where = self._key_path or "secret"
        if source == "env":
            value = os.environ.get(arg)
            if value is None:
                raise SecretResolutionError(
                    f"{where}: environment variable {arg} is not set (referenced as {ref}); "
                    f"export it before starting ledgerbridge or change the reference"
                )
            if value == "":
                raise SecretResolutionError(f"{where}: environment variable {arg} is empty (referenced as {ref})")
            return value
        path = Path(arg).expanduser()
        if not path.is_absolute() and self._base_dir is not None:
            path = self._base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretResolutionError(f"{where}: secret file {path} does not exist (referenced as {ref})") from None
        except OSError as exc:
            raise SecretResolutionError(
                f"{where}: secret file {path} cannot be read ({exc.strerror}) (referenced as {ref})"
            ) from None
        if text.endswith("\n"):
            text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
        if text == "":
            raise SecretResolutionError(f"{where}: secret file {path} is empty (referenced as {ref})")
        return text

    # ---- pydantic integration
    @classmethod
    def _validate(cls, value: Any) -> SecretRef:
        if isinstance(value, SecretRef):
            return value
        if not isinstance(value, str):
            raise ValueError(f"a secret must be a reference string; {HOW}")
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: str(v), when_used="always"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": r"^\$\{(env|file):[^}]+\}$", "description": "secret reference"}
