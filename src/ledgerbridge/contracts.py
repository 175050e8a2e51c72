"""Contracts as a product: export the canonical JSON Schemas and check two exports for breaking changes.

``ledgerbridge contracts export DIR`` writes one schema per contract in :data:`ledgerbridge.model.CONTRACTS`
(``DIR/<contract_name>.json``) plus ``DIR/index.json``; bytes are deterministic (sorted keys, indent 2, trailing
newline) so the committed export in ``contracts/`` diffs cleanly in review.

``ledgerbridge contracts check OLD_DIR NEW_DIR`` compares every contract and classifies each difference as
*breaking* or *non-breaking*. The rule of thumb: a change is non-breaking when every document valid under the old
schema is still valid under the new one *and* no consumer can meet a value it has never seen (so any enum change is
breaking). The classification lives in pure functions (:func:`diff_schemas`, :func:`diff_exports`) so it can be
used and tested without files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ledgerbridge.model import CONTRACTS, Contract

__all__ = [
    "Change",
    "contracts_app",
    "diff_exports",
    "diff_schemas",
    "export_contracts",
    "load_export",
    "major_version",
    "schema_bytes",
]

INDEX_FILE = "index.json"

# Keywords that only annotate a schema: a change is reported, never breaking.
_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment")
# Keywords handled structurally below; any *other* keyword that differs is reported as breaking (conservative).
_STRUCTURAL = {
    "$ref", "$defs", "definitions", "allOf", "anyOf", "oneOf", "type", "enum", "const", "properties", "required",
    "additionalProperties", "items", "prefixItems", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "pattern", "format",
    "multipleOf", "uniqueItems", "discriminator",
}
_SIZE_BOUNDS = (("minLength", "maxLength"), ("minItems", "maxItems"), ("minProperties", "maxProperties"))


@dataclass(frozen=True)
class Change:
    """One classified difference between two versions of a contract.

    ``path`` is the field path inside the contract (``lines[].account``, ``dimensions.*``); empty for the contract
    itself. ``major_bumped`` says whether the contract's ``x-version`` major number increased between the two
    exports (``None`` when the contract exists on one side only).
    """

    contract: str
    path: str
    kind: str
    detail: str
    breaking: bool
    major_bumped: bool | None = None

    @property
    def classification(self) -> str:
        return "breaking" if self.breaking else "non-breaking"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classification"] = self.classification
        return d


# --------------------------------------------------------------------------- export


def schema_bytes(schema: Mapping[str, Any]) -> bytes:
    """The canonical serialisation of a schema: sorted keys, indent 2, UTF-8, trailing newline."""
    return (json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def export_contracts(directory: Path, contracts: Iterable[type[Contract]] = CONTRACTS) -> list[Path]:
    """Write ``<contract_name>.json`` for each contract and ``index.json``; return the files written (sorted)."""
    directory.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, str]] = []
    written: list[Path] = []
    seen: set[str] = set()
    for cls in contracts:
        name = cls.contract_name
        if not name:
            raise ValueError(f"{cls.__name__} has no contract_name: set the ClassVar before exporting it")
        if name in seen:
            raise ValueError(f"two contracts are named {name!r}: contract names must be unique")
        seen.add(name)
        target = directory / f"{name}.json"
        target.write_bytes(schema_bytes(cls.contract_schema()))
        written.append(target)
        index.append({"name": name, "owner": cls.owner, "version": cls.contract_version, "file": target.name})
    index.sort(key=lambda e: e["name"])
    (directory / INDEX_FILE).write_bytes(schema_bytes({"contracts": index}))
    written.append(directory / INDEX_FILE)
    return sorted(written)


def load_export(directory: Path) -> dict[str, dict[str, Any]]:
    """Read every ``*.json`` schema of an export (``index.json`` excluded), keyed by its ``x-contract`` name."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory (expected a contracts export)")
    out: dict[str, dict[str, Any]] = {}
    for file in sorted(directory.glob("*.json")):
        if file.name == INDEX_FILE:
            continue
        try:
            schema = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno}); re-run the export") from None
        if not isinstance(schema, dict):
            raise ValueError(f"{file}: a contract schema must be a JSON object")
        name = str(schema.get("x-contract") or file.stem)
        if name in out:
            raise ValueError(f"{file}: contract {name!r} appears twice in {directory}")
        out[name] = schema
    return out


def major_version(version: object) -> int | None:
    """Major number of an ``x-version`` such as ``"1.2"`` (``None`` when absent or not numeric)."""
    if version is None:
        return None
    head = str(version).split(".", 1)[0].strip()
    return int(head) if head.isdigit() else None


# --------------------------------------------------------------------------- classification


class _Walker:
    """Compares two schemas (each with its own ``$defs``) and collects changes."""

    def __init__(self, contract: str, old_root: Mapping[str, Any], new_root: Mapping[str, Any]) -> None:
        self.contract = contract
        self.roots = (old_root, new_root)
        self.changes: list[Change] = []
        self._active: set[tuple[str, str]] = set()

    # ---- helpers
    def add(self, path: str, kind: str, detail: str, breaking: bool) -> None:
        self.changes.append(Change(self.contract, path, kind, detail, breaking))

    @staticmethod
    def _lookup(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref are supported, got {ref!r}")
        node: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(f"$ref {ref!r} does not resolve inside the schema")
            node = node[part]
        if not isinstance(node, Mapping):
            raise ValueError(f"$ref {ref!r} does not point to a schema object")
        return node

    def resolve(self, side: int, schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
        """Inline ``$ref`` (siblings override the target, as pydantic emits ``{"$ref":..., "default":...}``) and
        single-element ``allOf``. Returns the schema and the ref chain (for recursion guarding)."""
        chain = ""
        seen: set[str] = set()
        while True:
            if "$ref" in schema:
                ref = str(schema["$ref"])
                if ref in seen:
                    raise ValueError(f"$ref cycle through {ref!r}")
                seen.add(ref)
                chain = ref
                target = self._lookup(self.roots[side], ref)
                merged = dict(target)
                merged.update({k: v for k, v in schema.items() if k != "$ref"})
                schema = merged
                continue
            all_of = schema.get("allOf")
            if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], Mapping):
                merged = dict(all_of[0])
                merged.update({k: v for k, v in schema.items() if k != "allOf"})
                schema = merged
                continue
            return schema, chain

    def branches(self, side: int, schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The alternatives a value may take: anyOf/oneOf members, a ``type`` list split per type, else itself."""
        schema, _ = self.resolve(side, schema)
        alts = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(alts, list):
            shared = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf") and k not in _ANNOTATIONS}
            out: list[Mapping[str, Any]] = []
            for alt in alts:
                merged = dict(shared)
                merged.update(alt)
                out.extend(self.branches(side, merged))
            return out
        types = schema.get("type")
        if isinstance(types, list):
            return [{**schema, "type": t} for t in types]
        return [schema]

    # ---- comparison
    def compare(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old_r, old_chain = self.resolve(0, old)
        new_r, new_chain = self.resolve(1, new)
        guard = (old_chain, new_chain)
        if old_chain and new_chain:
            if guard in self._active:
                return  # recursive structure already being compared higher up
            self._active.add(guard)
        try:
            self._annotations(old_r, new_r, path)
            old_b = self.branches(0, old_r)
            new_b = self.branches(1, new_r)
            if len(old_b) == 1 and len(new_b) == 1:
                self._compare_single(old_b[0], new_b[0], path)
            else:
                self._compare_union(old_b, new_b, path)
        finally:
            if old_chain and new_chain:
                self._active.discard(guard)

    def _annotations(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        for key in _ANNOTATIONS:
            if old.get(key) != new.get(key):
                if key == "default":
                    detail = f"default {_show(old.get(key), key in old)} -> {_show(new.get(key), key in new)}"
                    self.add(path, "default_changed", detail, False)
                elif key == "deprecated":
                    self.add(path, "deprecated_changed", f"deprecated {old.get(key)} -> {new.get(key)}", False)
                else:
                    self.add(path, f"{key}_changed", f"{key} changed", False)

    def _compare_union(self, old_b: list[Mapping[str, Any]], new_b: list[Mapping[str, Any]], path: str) -> None:
        unmatched_new = list(range(len(new_b)))
        pairs: list[tuple[int, int]] = []
        unmatched_old: list[int] = []
        for i, ob in enumerate(old_b):
            j = self._match(ob, [new_b[k] for k in unmatched_new])
            if j is None:
                unmatched_old.append(i)
            else:
                pairs.append((i, unmatched_new.pop(j)))
        for i, j in pairs:
            self._compare_single(old_b[i], new_b[j], path)
        for i in unmatched_old:
            ob = old_b[i]
            cover = next((new_b[j] for j in unmatched_new if _covers(new_b[j], ob)), None)
            if cover is None:
                cover = next((nb for nb in new_b if _covers(nb, ob)), None)
            if cover is not None:
                self.add(path, "type_widened", f"{_label(ob)} -> {_label(cover)}", False)
            elif _label(ob) == "null":
                self.add(path, "null_removed", "null no longer allowed (anyOf branch removed)", True)
            else:
                self.add(path, "branch_removed", f"anyOf branch removed: {_label(ob)}", True)
        for j in unmatched_new:
            nb = new_b[j]
            if any(_covers(nb, old_b[i]) for i in unmatched_old):
                continue  # already reported as a widening
            if _label(nb) == "null":
                self.add(path, "null_added", "null now allowed (optional)", False)
            else:
                self.add(path, "branch_added", f"type widened: also accepts {_label(nb)}", False)

    @staticmethod
    def _match(branch: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> int | None:
        key = _type_key(branch)
        exact = [k for k, c in enumerate(candidates) if _type_key(c) == key]
        if exact:
            return exact[0]
        loose = [k for k, c in enumerate(candidates) if _type_key(c)[0] == key[0]]
        if len(loose) == 1:
            return loose[0]
        return None

    def _compare_single(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old, _ = self.resolve(0, old)
        new, _ = self.resolve(1, new)
        ot, nt = _type_of(old), _type_of(new)
        if ot != nt:
            if nt == "any" or (ot == "integer" and nt == "number"):
                self.add(path, "type_widened", f"type {ot} -> {nt}", False)
                return
            if ot == "any" or (ot == "number" and nt == "integer"):
                self.add(path, "type_narrowed", f"type {ot} -> {nt}", True)
            else:
                self.add(path, "type_changed", f"type {ot} -> {nt}", True)
            return
        self._enum_const(old, new, path)
        self._bounds(old, new, path)
        self._keywords(old, new, path)
        if nt == "object":
            self._object(old, new, path)
        elif nt == "array":
            self._array(old, new, path)

    def _enum_const(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        oe, ne = old.get("enum"), new.get("enum")
        if oe != ne:
            if oe is None:
                self.add(path, "enum_added", f"values restricted to {_vals(ne)}", True)
            elif ne is None:
                self.add(path, "enum_removed", f"enum {_vals(oe)} removed (any value now allowed)", True)
            else:
                removed = [v for v in oe if v not in ne]
                added = [v for v in ne if v not in oe]
                if removed or added:
                    parts = ([f"removed {_vals(removed)}"] if removed else []) + (
                        [f"added {_vals(added)}"] if added else []
                    )
                    self.add(path, "enum_changed", "enum " + ", ".join(parts), True)
        if ("const" in old) != ("const" in new) or old.get("const") != new.get("const"):
            detail = f"const {_show(old.get('const'), 'const' in old)} -> {_show(new.get('const'), 'const' in new)}"
            self.add(path, "const_changed", detail, True)

    def _bounds(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        # numeric lower / upper bounds, exclusive or not, compared as one bound each
        numeric = (("lower", "minimum", "exclusiveMinimum"), ("upper", "maximum", "exclusiveMaximum"))
        for side, incl, excl in numeric:
            ob, nb = _bound(old, incl, excl), _bound(new, incl, excl)
            if ob == nb:
                continue
            tighter = _tighter(ob, nb, lower=side == "lower")
            self.add(path, "constraint_tightened" if tighter else "constraint_loosened",
                     f"{side} bound {_show_bound(ob, side)} -> {_show_bound(nb, side)}", tighter)
        for lo, hi in _SIZE_BOUNDS:
            for key, is_lower in ((lo, True), (hi, False)):
                o, n = old.get(key), new.get(key)
                if o == n:
                    continue
                if o is None:
                    tighter = True
                elif n is None:
                    tighter = False
                else:
                    tighter = n > o if is_lower else n < o
                self.add(path, "constraint_tightened" if tighter else "constraint_loosened",
                         f"{key} {_show(o, o is not None)} -> {_show(n, n is not None)}", tighter)

    def _keywords(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        for key in ("pattern", "format", "multipleOf"):
            o, n = old.get(key), new.get(key)
            if o == n:
                continue
            if n is None:
                self.add(path, "constraint_loosened", f"{key} {o!r} removed", False)
            else:
                verb = "added" if o is None else f"changed from {o!r}"
                self.add(path, "constraint_tightened", f"{key} {n!r} {verb}", True)
        if bool(old.get("uniqueItems")) != bool(new.get("uniqueItems")):
            tighter = bool(new.get("uniqueItems"))
            self.add(path, "constraint_tightened" if tighter else "constraint_loosened",
                     f"uniqueItems {bool(old.get('uniqueItems'))} -> {tighter}", tighter)
        skip = _STRUCTURAL | set(_ANNOTATIONS)
        for key in sorted((set(old) | set(new)) - skip):
            if key.startswith("x-"):
                continue
            if old.get(key) != new.get(key):
                self.add(path, "keyword_changed", f"unrecognised keyword {key!r} changed (reviewed as breaking)", True)

    def _object(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        op: Mapping[str, Any] = old.get("properties") or {}
        np: Mapping[str, Any] = new.get("properties") or {}
        oreq, nreq = set(old.get("required") or ()), set(new.get("required") or ())
        for name in op:
            sub = _join(path, name)
            if name not in np:
                self.add(sub, "field_removed", "field removed", True)
                continue
            if name in nreq and name not in oreq:
                self.add(sub, "made_required", "optional field made required", True)
            elif name in oreq and name not in nreq:
                self.add(sub, "made_optional", "required field made optional", False)
            self.compare(op[name], np[name], sub)
        for name in np:
            if name in op:
                continue
            sub = _join(path, name)
            if name in nreq:
                self.add(sub, "required_field_added", "new required field", True)
            else:
                self.add(sub, "optional_field_added", "new optional field", False)
        oa, na = old.get("additionalProperties", True), new.get("additionalProperties", True)
        if isinstance(oa, Mapping) and isinstance(na, Mapping):
            self.compare(oa, na, _join(path, "*"))
        elif oa != na:
            o_closed, n_closed = oa is False, na is False
            if n_closed and not o_closed:
                self.add(_join(path, "*"), "additional_closed", "additional properties no longer allowed", True)
            elif o_closed and not n_closed:
                self.add(_join(path, "*"), "additional_opened", "additional properties now allowed", False)
            elif isinstance(na, Mapping):  # anything -> constrained values
                self.add(_join(path, "*"), "constraint_tightened", "additional property values now constrained", True)
            else:
                self.add(_join(path, "*"), "constraint_loosened", "additional property values unconstrained", False)

    def _array(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        opi, npi = old.get("prefixItems") or [], new.get("prefixItems") or []
        for k in range(max(len(opi), len(npi))):
            sub = f"{path}[{k}]"
            if k >= len(npi):
                self.add(sub, "position_removed", "fixed tuple position removed", True)
            elif k >= len(opi):
                self.add(sub, "position_added", "fixed tuple position added", True)
            else:
                self.compare(opi[k], npi[k], sub)
        oi, ni = old.get("items"), new.get("items")
        if isinstance(oi, Mapping) and isinstance(ni, Mapping):
            self.compare(oi, ni, f"{path}[]")
        elif oi != ni:
            if isinstance(ni, Mapping) or ni is False:
                self.add(f"{path}[]", "constraint_tightened", "array items now constrained", True)
            else:
                self.add(f"{path}[]", "constraint_loosened", "array items unconstrained", False)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(value: object, present: bool) -> str:
    return json.dumps(value) if present else "(none)"


def _vals(values: Iterable[object]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _type_of(schema: Mapping[str, Any]) -> str:
    t = schema.get("type")
    if isinstance(t, str):
        return t
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if "enum" in schema or "const" in schema:
        values = list(schema.get("enum") or [schema.get("const")])
        kinds = {_json_type(v) for v in values}
        return kinds.pop() if len(kinds) == 1 else "any"
    return "any"


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _type_key(schema: Mapping[str, Any]) -> tuple[str, str]:
    t = _type_of(schema)
    return t, str(schema.get("title", "")) if t == "object" else str(schema.get("format", ""))


def _label(schema: Mapping[str, Any]) -> str:
    t = _type_of(schema)
    if t == "object" and schema.get("title"):
        return f"object {schema['title']}"
    if schema.get("format"):
        return f"{t} ({schema['format']})"
    return t


def _covers(wide: Mapping[str, Any], narrow: Mapping[str, Any]) -> bool:
    """True when ``wide`` plainly accepts every value ``narrow`` does (by type alone, unconstrained)."""
    wt, nt = _type_of(wide), _type_of(narrow)
    constrained = any(k in wide for k in ("enum", "const", "pattern", "format", "minimum", "maximum",
                                          "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
                                          "multipleOf"))
    if wt == "any":
        return not constrained
    return wt == "number" and nt == "integer" and not constrained


def _bound(schema: Mapping[str, Any], incl: str, excl: str) -> tuple[float, bool] | None:
    vals: list[tuple[float, bool]] = []
    if isinstance(schema.get(incl), int | float) and not isinstance(schema.get(incl), bool):
        vals.append((schema[incl], False))
    if isinstance(schema.get(excl), int | float) and not isinstance(schema.get(excl), bool):
        vals.append((schema[excl], True))
    if not vals:
        return None
    return max(vals) if incl == "minimum" else min(vals, key=lambda b: (b[0], not b[1]))


def _tighter(old: tuple[float, bool] | None, new: tuple[float, bool] | None, *, lower: bool) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    if new[0] != old[0]:
        return new[0] > old[0] if lower else new[0] < old[0]
    return new[1] and not old[1]


def _show_bound(b: tuple[float, bool] | None, side: str) -> str:
    if b is None:
        return "(none)"
    op = (">" if b[1] else ">=") if side == "lower" else ("<" if b[1] else "<=")
    return f"{op} {b[0]}"


def diff_schemas(old: Mapping[str, Any], new: Mapping[str, Any], contract: str = "") -> list[Change]:
    """Classify every difference between two JSON Schemas of one contract (pure; no I/O).

    Resolves the ``$ref``/``$defs`` pydantic emits, treats ``anyOf`` with ``null`` as an optional value and reports
    each difference once with its field path. Version metadata (``x-version``/``x-owner``) is reported as
    non-breaking information; use :func:`diff_exports` to attach whether the major version was bumped.
    """
    name = contract or str(new.get("x-contract") or old.get("x-contract") or "")
    walker = _Walker(name, old, new)
    for key in ("x-version", "x-owner"):
        if old.get(key) != new.get(key):
            walker.add("", f"{key[2:]}_changed", f"{key} {old.get(key)!r} -> {new.get(key)!r}", False)
    walker.compare(old, new, "")
    return walker.changes


def diff_exports(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> list[Change]:
    """Compare two whole exports (contract name -> schema): removed contracts are breaking, new ones are not."""
    changes: list[Change] = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            changes.append(Change(name, "", "contract_removed", "contract removed", True))
            continue
        if name not in old:
            changes.append(Change(name, "", "contract_added", "new contract", False))
            continue
        o_major, n_major = major_version(old[name].get("x-version")), major_version(new[name].get("x-version"))
        bumped = o_major is not None and n_major is not None and n_major > o_major
        for ch in diff_schemas(old[name], new[name], name):
            changes.append(Change(ch.contract, ch.path, ch.kind, ch.detail, ch.breaking, bumped))
    return changes


def summarize(changes: Sequence[Change]) -> dict[str, int]:
    breaking = [c for c in changes if c.breaking]
    return {
        "changes": len(changes),
        "breaking": len(breaking),
        "non_breaking": len(changes) - len(breaking),
        "breaking_without_major_bump": sum(1 for c in breaking if c.major_bumped is False),
        "contracts_with_breaking": len({c.contract for c in breaking}),
    }


def _iter_rows(changes: Sequence[Change]) -> Iterator[tuple[str, str, str, str, str]]:
    for c in sorted(changes, key=lambda c: (not c.breaking, c.contract, c.path, c.kind)):
        bumped = "" if not c.breaking or c.major_bumped is None else ("yes" if c.major_bumped else "NO")
        yield c.contract, c.path or "(contract)", c.detail, c.classification, bumped


# --------------------------------------------------------------------------- CLI

contracts_app = typer.Typer(no_args_is_help=True, help="Export and compare the canonical contracts (JSON Schema).")


@contracts_app.command("export")
def export_command(
    directory: Path = typer.Argument(..., help="Directory to write <contract>.json files and index.json into."),
) -> None:
    """Write one JSON Schema per canonical entity and event, plus index.json (deterministic bytes)."""
    files = export_contracts(directory)
    typer.echo(f"exported {len(files) - 1} contracts to {directory}")


@contracts_app.command("check")
def check_command(
    old_dir: Path = typer.Argument(..., help="The published export (e.g. the committed contracts/ directory)."),
    new_dir: Path = typer.Argument(..., help="The candidate export (e.g. build/contracts-current)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
) -> None:
    """Compare two exports; exit 1 when any change is breaking."""
    try:
        changes = diff_exports(load_export(old_dir), load_export(new_dir))
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    summary = summarize(changes)
    if as_json:
        typer.echo(json.dumps({"summary": summary, "changes": [c.to_dict() for c in changes]}, indent=2))
    else:
        console = Console(width=max(Console().width, 120))
        if changes:
            table = Table(title=f"contract changes {old_dir} -> {new_dir}")
            for col in ("contract", "field path", "change", "class", "major bumped"):
                table.add_column(col)
            for row in _iter_rows(changes):
                style = "red" if row[3] == "breaking" else None
                table.add_row(*row, style=style)
            console.print(table)
        line = f"{summary['breaking']} breaking, {summary['non_breaking']} non-breaking change(s)"
        if summary["breaking_without_major_bump"]:
            line += f"; {summary['breaking_without_major_bump']} breaking change(s) without an x-version major bump"
        console.print(("FAIL: " if summary["breaking"] else "OK: ") + line, markup=False, highlight=False)
    if summary["breaking"]:
        raise typer.Exit(1)
