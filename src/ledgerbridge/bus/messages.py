"""The wire shape of a source record on the bus: subject ``<prefix>.<system>.<entity>``, JSON body, and the
``Nats-Msg-Id`` header = the inbox idempotency key (``system:entity:external_id:version``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ledgerbridge.store.inbox import InboxItem

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
MSG_ID = "Nats-Msg-Id"


class BusMessageError(ValueError):
    """A record that cannot go on (or come off) the bus; the message names the item, the rule and the fix."""


def subject_for(prefix: str, system: str, entity: str) -> str:
    for what, token in (("system", system), ("entity", entity)):
        if not _TOKEN.match(token or ""):
            raise BusMessageError(f"{what} {token!r}: a subject token may only hold letters, digits, '_' and '-' "
                                  "(no dots, spaces or wildcards) — rename the configured system/entity")
    return f"{prefix}.{system}.{entity}"


def record_key(system: str, rec: dict[str, Any]) -> str:
    return f"{system}:{rec['entity']}:{rec['external_id']}:{rec['version']}"


def encode_record(prefix: str, system: str, rec: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    """``(subject, body, headers)`` for one source record (``entity, external_id, version, payload``)."""
    missing = [k for k in ("entity", "external_id", "version", "payload") if k not in rec]
    if missing:
        raise BusMessageError(f"record {rec.get('external_id', '?')!r} from {system}: missing {missing} — a source "
                              "record needs entity, external_id, version and payload")
    body = {"system": system, "entity": rec["entity"], "external_id": str(rec["external_id"]),
            "version": rec["version"], "payload": rec["payload"]}
    data = json.dumps(body, separators=(",", ":"), default=str).encode()
    return subject_for(prefix, system, str(rec["entity"])), data, {MSG_ID: record_key(system, body)}


@dataclass(frozen=True, slots=True)
class Decoded:
    item: InboxItem
    key: str


def decode_record(subject: str, data: bytes, prefix: str) -> Decoded:
    """Parse one bus message back into an inbox item; raises :class:`BusMessageError` naming what is wrong."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BusMessageError(f"message on {subject}: body is not JSON ({err}) — publish records with "
                              "ledgerbridge.flows.intake.accept or ledgerbridge bus publish") from None
    if not isinstance(body, dict):
        raise BusMessageError(f"message on {subject}: body is a JSON {type(body).__name__}, expected an object")
    missing = [k for k in ("system", "entity", "external_id", "version", "payload") if k not in body]
    if missing:
        raise BusMessageError(f"message on {subject}: missing {missing} — a record needs system, entity, "
                              "external_id, version and payload")
    expected = f"{prefix}.{body['system']}.{body['entity']}"
    if subject != expected:
        raise BusMessageError(f"message on {subject}: body names {body['system']}/{body['entity']}, whose subject "
                              f"is {expected} — publish each record on its own system's and entity's subject")
    version = body["version"]
    if isinstance(version, bool) or not (isinstance(version, int) or (isinstance(version, str) and version)):
        raise BusMessageError(f"message on {subject} ({body['external_id']!r}): version {version!r} must be an "
                              "integer or a non-empty string")
    if not isinstance(body["payload"], dict):
        raise BusMessageError(f"message on {subject} ({body['external_id']!r}): payload must be a JSON object")
    item = InboxItem(str(body["system"]), str(body["entity"]), str(body["external_id"]), version, body["payload"])
    return Decoded(item, record_key(item.system, {"entity": item.entity, "external_id": item.external_id,
                                                 "version": item.version}))
