"""JSON serializer for everything DBOS checkpoints (workflow inputs/outputs, step outputs, errors, messages).

DBOS pickles by default, so renaming or refactoring a class breaks the replay of old checkpoints. DBOS 3.4 has a
``serializer`` config option and a "portable JSON" serializer, but the portable one silently turns ``Decimal`` and
``datetime`` into strings (a workflow would see a ``Decimal`` on its first run and a ``str`` after recovery) and
turns every exception into a generic ``PortableWorkflowError`` (an ``except PermanentError`` in a workflow would
behave differently on replay). This serializer is strict instead:

- data must be plain JSON: ``dict`` (string keys), ``list``, ``str``, ``int``, ``float`` (finite), ``bool``,
  ``None`` (no tuples: they would come back as lists after a recovery). Anything else raises :class:`TypeError`
  naming the path and the fix — pass money as strings/dicts and models as ``model.model_dump(mode="json")``.
  One exception: ``datetime`` (DBOS passes the tick time to scheduled workflows) is stored as ISO 8601 and comes
  back as an equal ``datetime``;
- :class:`~ledgerbridge.errors.LedgerbridgeError` round-trips exactly as JSON (class, code, retry_after, details);
- any other exception (DBOS internals, bugs) is stored with its type and message plus a pickled copy so DBOS can
  re-raise it on replay; if that copy cannot be restored the replay raises :class:`UnrestorableError` with the
  original type and message;
- DBOS's own records that DBOS checkpoints itself (a ``WorkflowStatus`` read from workflow code) are kept pickled:
  they are DBOS's types and move with the pinned DBOS version.
"""

from __future__ import annotations

import base64
import json
import math
import pickle
from datetime import datetime
from typing import Any

from dbos import Serializer

from ledgerbridge.errors import LedgerbridgeError, error_from_dict

SERIALIZER_NAME = "ledgerbridge_json_v1"
_ERR = "__lb_error__"
_EXC = "__lb_exception__"
_DBOS = "__lb_dbos_object__"
_DT = "__lb_datetime__"
_RESERVED_PREFIX = "__lb_"


class UnrestorableError(RuntimeError):
    """A checkpointed non-ledgerbridge exception whose pickled copy could not be restored on replay."""


def _pickled(value: Any) -> str | None:
    try:
        return base64.b64encode(pickle.dumps(value)).decode("ascii")
    except Exception:  # not picklable: the caller keeps what it can
        return None


def _check(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"workflow data at {path} is {value!r}: only finite numbers can be stored")
        return value
    if isinstance(value, list):
        return [_check(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        raise TypeError(
            f"workflow data at {path} is a tuple: it would come back as a list after recovery, so a workflow "
            "would see different types before and after a crash. Fix: pass a list"
        )
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"workflow data at {path} has a non-string key {key!r}: JSON objects need str keys")
            if key.startswith(_RESERVED_PREFIX):
                raise TypeError(f"workflow data at {path} uses the reserved key {key!r} (prefix {_RESERVED_PREFIX})")
            out[key] = _check(item, f"{path}.{key}")
        return out
    if isinstance(value, datetime):
        # DBOS passes the tick time to scheduled workflows; stored as ISO 8601 and restored as the same datetime.
        return {_DT: value.isoformat()}
    if isinstance(value, LedgerbridgeError):
        return {_ERR: value.to_dict()}
    if isinstance(value, BaseException):
        return {
            _EXC: {
                "type": f"{type(value).__module__}.{type(value).__qualname__}",
                "message": str(value),
                "pickle": _pickled(value),
            }
        }
    if type(value).__module__.split(".")[0] == "dbos":
        # DBOS checkpoints some of its own records (e.g. a WorkflowStatus read from workflow code). They are
        # DBOS's types, pinned with DBOS, so they are kept as DBOS made them.
        blob = _pickled(value)
        if blob is not None:
            return {_DBOS: blob}
    raise TypeError(
        f"workflow data at {path} is a {type(value).__module__}.{type(value).__qualname__}: durable workflow inputs "
        "and outputs must be plain JSON data (dict/list/str/int/float/bool/None). Fix: pass Decimal amounts and "
        "dates as strings and models as model.model_dump(mode='json')"
    )


def encode(value: Any) -> Any:
    """The JSON-able form of ``value`` as it will be stored (raises TypeError for non-plain data)."""
    if isinstance(value, dict) and set(value) == {"args", "kwargs"} and isinstance(value["args"], tuple):
        # DBOS's own envelope for workflow inputs: positional args arrive as a tuple and are splatted back.
        return {"args": _check(list(value["args"]), "$.args"), "kwargs": _check(value["kwargs"], "$.kwargs")}
    return _check(value, "$")


def _restore(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: turn the envelopes written by :func:`_check` back into objects."""
    if len(obj) != 1:
        return obj
    if _ERR in obj:
        return error_from_dict(obj[_ERR])
    if _EXC in obj:
        info = obj[_EXC]
        if info.get("pickle"):
            try:
                return pickle.loads(base64.b64decode(info["pickle"]))
            except Exception:
                pass
        return UnrestorableError(f"{info.get('type')}: {info.get('message')}")
    if _DT in obj:
        return datetime.fromisoformat(obj[_DT])
    if _DBOS in obj:
        return pickle.loads(base64.b64decode(obj[_DBOS]))
    return obj


def decode(text: str) -> Any:
    """Inverse of ``json.dumps(encode(value))``."""
    return json.loads(text, object_hook=_restore)


class LedgerbridgeJSONSerializer(Serializer):
    """DBOS ``serializer`` plugging :func:`encode` / :func:`decode` into every checkpoint."""

    def name(self) -> str:
        return SERIALIZER_NAME

    def serialize(self, data: Any) -> str:
        return json.dumps(encode(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def deserialize(self, serialized_data: str) -> Any:
        return decode(serialized_data)
