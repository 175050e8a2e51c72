"""`ledgerbridge contracts export`: one deterministic JSON Schema per canonical contract, plus index.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgerbridge.contracts import contracts_app, diff_exports, export_contracts, load_export, schema_bytes
from ledgerbridge.model import CONTRACTS

try:  # the whole command when every sub-app is importable; the contracts app alone otherwise
    from ledgerbridge.cli import app as _cli_app

    CLI, PREFIX = _cli_app, ["contracts"]
except ImportError:  # pragma: no cover - another sub-app not written yet
    CLI, PREFIX = contracts_app, []

REPO = Path(__file__).resolve().parents[1]


def test_export_writes_one_schema_per_contract_with_metadata(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "export"  # DIR is created
    result = CliRunner().invoke(CLI, [*PREFIX, "export", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(p.stem for p in out.glob("*.json") if p.name != "index.json")
    assert names == sorted(c.contract_name for c in CONTRACTS)
    for cls in CONTRACTS:
        schema = json.loads((out / f"{cls.contract_name}.json").read_text())
        assert schema["x-contract"] == cls.contract_name
        assert schema["x-version"] == cls.contract_version
        assert schema["x-owner"] == cls.owner and schema["x-owner"]
        assert schema == cls.contract_schema()
    index = json.loads((out / "index.json").read_text())["contracts"]
    assert [e["name"] for e in index] == sorted(c.contract_name for c in CONTRACTS)
    assert all({"name", "version", "owner"} <= set(e) for e in index)


def test_export_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    a = export_contracts(tmp_path / "a")
    b = export_contracts(tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b, strict=True):
        data = pa.read_bytes()
        assert data == pb.read_bytes()
        assert data.endswith(b"}\n") and not data.endswith(b"\n\n")
        # canonical form: sorted keys, indent 2
        assert data == schema_bytes(json.loads(data))
        assert b'\n  "' in data


def test_load_export_keys_by_contract_name(tmp_path: Path) -> None:
    export_contracts(tmp_path)
    loaded = load_export(tmp_path)
    assert set(loaded) == {c.contract_name for c in CONTRACTS}


def test_current_model_has_no_breaking_change_against_committed_contracts(tmp_path: Path) -> None:
    """contracts/ is the published export; the Makefile runs the same gate with the CLI."""
    committed = REPO / "contracts"
    if not (committed / "index.json").is_file():
        pytest.skip("no committed contracts/ export in this checkout")
    export_contracts(tmp_path)
    breaking = [c for c in diff_exports(load_export(committed), load_export(tmp_path)) if c.breaking]
    assert not breaking, f"breaking contract changes (bump x-version major and re-export on purpose): {breaking}"


def test_duplicate_contract_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two contracts are named"):
        export_contracts(tmp_path, [CONTRACTS[0], CONTRACTS[0]])
