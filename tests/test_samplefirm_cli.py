"""``ledgerbridge demo generate`` / ``demo run`` through Typer's CliRunner on ``demo_app``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgerbridge.samplefirm.cli import demo_app
from ledgerbridge.samplefirm.fileformat import FILE_MODELS, MANIFEST
from ledgerbridge.samplefirm.reader import load_firm

runner = CliRunner()


def test_generate_writes_the_files_and_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "export"
    res = runner.invoke(demo_app, ["generate", "--out", str(out), "--seed", "9", "--employees", "12",
                                   "--months", "2", "--start", "2027-01"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["parameters"] == {"employees": 12, "months": 2, "start": "2027-01"}
    assert manifest["window"]["closed_period"] == "2026-12"
    for name in FILE_MODELS:
        assert (out / name).exists()
        assert name in res.output
    te_rows = manifest["files"]["time_entries.csv"]["rows"]
    assert f"{te_rows:,}" in res.output and "elapsed" in res.output
    assert load_firm(out, verify=True).errors == []


def test_generate_refuses_a_bad_start_month(tmp_path: Path) -> None:
    res = runner.invoke(demo_app, ["generate", "--out", str(tmp_path), "--start", "2026-13"])
    assert res.exit_code != 0
    assert "YYYY-MM" in res.output
    assert not (tmp_path / MANIFEST).exists()


@pytest.mark.parametrize("args", [["--employees", "0"], ["--months", "0"]])
def test_generate_refuses_nonpositive_sizes(tmp_path: Path, args: list[str]) -> None:
    res = runner.invoke(demo_app, ["generate", "--out", str(tmp_path), *args])
    assert res.exit_code != 0 and not (tmp_path / MANIFEST).exists()


def test_run_is_the_main_job_and_reports_as_json(tmp_path: Path) -> None:
    """``demo run`` generates the firm into its workdir and runs the main job (tests/test_main_job.py covers the
    ledger itself); ``--json`` gives the whole result for machines."""
    res = runner.invoke(demo_app, ["run", "--workdir", str(tmp_path / "demo"), "--employees", "4", "--months", "1",
                                   "--json"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "demo" / "psa-export" / MANIFEST).read_text())
    assert manifest["seed"] == 42
    assert manifest["parameters"] == {"employees": 4, "months": 1, "start": "2026-09"}
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["ledger_check"] == [] and [m["period"] for m in out["months"]] == ["2026-09"]
    assert any(p["status"] == "posted" for p in out["months"][0]["posting"])


def test_check_reports_bad_rows_with_line_and_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "export"
    assert runner.invoke(demo_app, ["generate", "--out", str(out), "--employees", "8", "--months", "1"]).exit_code == 0
    ok = runner.invoke(demo_app, ["check", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "no problems" in ok.output

    lines = (out / "time_entries.csv").read_text(encoding="utf-8").splitlines()
    cells = lines[3].split(",")
    cells[6] = "2026-02-30"  # work_date on line 4
    lines[3] = ",".join(cells)
    (out / "time_entries.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = runner.invoke(demo_app, ["check", str(out)])
    assert bad.exit_code == 1
    text = " ".join(bad.output.split())  # undo Rich line wrapping
    assert "time_entries.csv:4 [work_date]:" in text
    assert "SHA-256" in text  # the manifest no longer matches the edited file
    assert f"{len(lines) - 2:,}" in text  # every other row still loaded
