"""Fuzzing every file and payload parser with hypothesis: each either returns its result or raises its own
documented error naming the problem — never another exception — and nothing is lost or half-written.

Bounded in ``make test`` (``LB_FUZZ_EXAMPLES``, default 150 per target); ``make fuzz`` runs the full suite
(15,000 per target here, plus schemathesis on the API) and prints hypothesis's statistics. Targets:

- the sample-firm CSV reader (every data row is either an item or an error with its line: rows in = items + errored
  rows), on mutated valid files and on arbitrary bytes;
- the configuration loader (``validate_text`` returns issues, never raises), on mutated starter YAML and arbitrary
  text;
- the signed webhook endpoint, through the real app: arbitrary JSON and mutated valid events, correctly signed —
  never a 5xx; a refusal stores nothing, an acceptance stores exactly one inbox row (0 partial writes);
- the file-journal acknowledgement parsers (CSV and JSON), the bus message decoder, the HTTP answer classifier and
  every canonical contract's validation.
"""

from __future__ import annotations

import csv
import io
import json
import os
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledgerbridge.bus.messages import BusMessageError, decode_record
from ledgerbridge.config.loader import starter_text, validate_text
from ledgerbridge.connectors.file_journal.mapping import AckFormatError, parse_ack_csv, parse_ack_json
from ledgerbridge.errors import LedgerbridgeError, classify_http
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.model import CONTRACTS
from ledgerbridge.model.entities import TimeEntry
from ledgerbridge.samplefirm.reader import CsvReader
from ledgerbridge.service import testing as svc
from ledgerbridge.service.app import create_app
from ledgerbridge.service.settings import ServiceSettings
from ledgerbridge.service.webhooks import signed_headers
from ledgerbridge.store.schema import inbox

from flows_support import make_ctx, tiny_firm

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("LB_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("LB_FUZZ_RANDOM") != "1",
                suppress_health_check=list(HealthCheck))
SECRET = "whsec-fuzz-0b7c51e2"

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)
NASTY = st.sampled_from(["", " ", "-1", "0", "1e309", "NaN", "Infinity", "2026-02-30", "9999-99-99", "null", "true",
                         "\x00", "\ud800", "é", "1,5", "1.005", "99999999999999999999.999", "'; DROP TABLE x; --",
                         "USD", "usd", "XXX", "P-1;P-2", "a" * 300])
FIELD_TEXT = NASTY | st.text(max_size=20) | st.text(alphabet=string.digits + ".-", max_size=12)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_firm(tmp_path_factory.mktemp("firm"), employees=3, months=1)


@pytest.fixture(scope="module")
def time_rows(export: Path) -> tuple[list[str], list[list[str]]]:
    with (export / "time_entries.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:40]


# --------------------------------------------------------------------------------------------------- CSV reader


def _read(tmp: Path, content: bytes) -> tuple[int, int, int, set[int], bool]:
    path = tmp / "time_entries.csv"
    path.write_bytes(content)
    reader = CsvReader(path, TimeEntry)
    items = list(reader)
    errored = {e.line for e in reader.errors if e.line > 1}
    stopped = any("not valid CSV" in e.message for e in reader.errors)
    return len(items), reader.rows, len(reader.errors), errored, stopped


@FUZZ
@given(data=st.data())
def test_csv_reader_accounts_for_every_row(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject,
                                          time_rows: tuple[list[str], list[list[str]]]) -> None:
    header, rows = time_rows
    picked = data.draw(st.lists(st.sampled_from(rows), min_size=1, max_size=8))
    mutated = []
    for row in picked:
        row = list(row)
        for _ in range(data.draw(st.integers(0, 3))):
            row[data.draw(st.integers(0, len(row) - 1))] = data.draw(FIELD_TEXT)
        if data.draw(st.integers(0, 9)) == 0:
            row = row[:-1]  # a missing value
        mutated.append(row)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *mutated])
    text = buf.getvalue().encode("utf-8", errors="surrogatepass")  # lone surrogates: invalid UTF-8 bytes
    n_items, n_rows, n_errors, errored_lines, stopped = _read(tmp_path_factory.mktemp("csv"), text)
    if stopped:  # a CSV syntax error stops the file with an error naming the line: nothing after it is guessed
        assert n_items + len(errored_lines) >= n_rows and n_errors > 0
    else:
        assert n_rows == len(mutated)
        assert n_items + len(errored_lines) == n_rows  # each data row: an item or (at least one) error, not both


@FUZZ
@given(blob=st.binary(max_size=600))
def test_csv_reader_never_crashes_on_bytes(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    n_items, n_rows, n_errors, _, _ = _read(tmp_path_factory.mktemp("bin"), blob)
    assert n_items <= n_rows and (n_items == n_rows or n_errors > 0)


# --------------------------------------------------------------------------------------------------- config


@FUZZ
@given(data=st.data())
def test_config_validation_returns_issues_never_raises(data: st.DataObject) -> None:
    lines = starter_text().splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        choice = data.draw(st.integers(0, 3))
        if choice == 0:
            lines[i] = data.draw(st.text(max_size=40))
        elif choice == 1:
            del lines[i]
        elif choice == 2:
            key, _, _ = lines[i].partition(":")
            lines[i] = f"{key}: {data.draw(FIELD_TEXT)!r}"
        else:
            lines.insert(i, "  " * data.draw(st.integers(0, 3)) + data.draw(st.text(max_size=20)))
    issues = validate_text("\n".join(lines))
    assert all(str(issue) for issue in issues)


@FUZZ
@given(text=st.text(max_size=300))
def test_config_validation_on_arbitrary_text(text: str) -> None:
    issues = validate_text(text)
    assert isinstance(issues, list)


# --------------------------------------------------------------------------------------------------- webhooks


@pytest.fixture(scope="module")
def webhook(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, TestClient, list[Any]]]:
    ctx = make_ctx(tmp_path_factory.mktemp("wh"), export_from=export)
    mp = pytest.MonkeyPatch()
    mp.setenv("LBF_WEBHOOK_SECRET", SECRET)
    svc.with_secret(ctx, SOURCE, "webhook", "${env:LBF_WEBHOOK_SECRET}")
    app = create_app(ctx, ServiceSettings(worker=False, webhook_tolerance_seconds=600))
    entries = svc.source_entries(ctx, SOURCE)[:20]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield ctx, client, entries
    mp.undo()


def _inbox_count(ctx: Any) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one())


def _post(ctx: Any, client: TestClient, body: bytes) -> tuple[int, int, int]:
    before = _inbox_count(ctx)
    r = client.post(f"/webhooks/{SOURCE}", content=body, headers={**signed_headers(SECRET, body),
                                                                    "content-type": "application/json"})
    return r.status_code, before, _inbox_count(ctx)


def _check(status: int, before: int, after: int) -> None:
    assert status < 500, status
    if status == 202:
        assert after - before in (0, 1)  # new (one row) or a duplicate delivery (none)
    else:
        assert status in (409, 413, 422) and after == before  # refused: nothing stored


@FUZZ
@given(payload=JSON)
def test_webhook_arbitrary_json_never_5xx_nor_partial(webhook: tuple[Any, TestClient, list[Any]],
                                                      payload: Any) -> None:
    ctx, client, _ = webhook
    _check(*_post(ctx, client, json.dumps(payload).encode()))


@FUZZ
@given(data=st.data())
def test_webhook_mutated_events_never_5xx_nor_partial(webhook: tuple[Any, TestClient, list[Any]],
                                                      data: st.DataObject) -> None:
    ctx, client, entries = webhook
    entry = data.draw(st.sampled_from(entries))
    payload = json.loads(json.dumps(svc.time_entry_event(entry)))
    target = payload
    for _ in range(data.draw(st.integers(1, 3))):
        if isinstance(target, dict) and target:
            key = data.draw(st.sampled_from(sorted(target)))
            if isinstance(target[key], dict) and data.draw(st.booleans()):
                target = target[key]
                continue
            action = data.draw(st.integers(0, 2))
            if action == 0:
                del target[key]
            elif action == 1:
                target[key] = data.draw(FIELD_TEXT)
            else:
                target[key] = data.draw(JSON)
            break
    _check(*_post(ctx, client, json.dumps(payload).encode()))


# --------------------------------------------------------------------------------------------------- small parsers


@FUZZ
@given(text=st.text(max_size=400), as_json=st.booleans())
def test_ack_parsers_raise_only_format_errors(text: str, as_json: bool) -> None:
    try:
        rows = parse_ack_json(text, "ack.json", "run-1") if as_json else parse_ack_csv(text, "ack.csv")
    except AckFormatError as exc:
        assert exc.problems and "malformed" in str(exc)
    else:
        assert isinstance(rows, list)


@FUZZ
@given(doc=JSON, csv_rows=st.lists(st.lists(FIELD_TEXT, min_size=1, max_size=6), max_size=6))
def test_ack_parsers_on_structured_input(doc: Any, csv_rows: list[list[str]]) -> None:
    for parse, text in ((lambda t: parse_ack_json(t, "a.json", "run-1"),
                         json.dumps({"run_id": "run-1", "results": doc if isinstance(doc, list) else [doc]})),
                        (lambda t: parse_ack_csv(t, "a.csv"),
                         "journal_id,status,target_ref,error\n" + "\n".join(",".join(r) for r in csv_rows))):
        try:
            parse(text)
        except AckFormatError as exc:
            assert exc.problems


@FUZZ
@given(subject=st.text(max_size=40), body=st.binary(max_size=200) | JSON.map(lambda d: json.dumps(d).encode()))
def test_bus_decoder_raises_only_its_error(subject: str, body: bytes) -> None:
    try:
        decoded = decode_record(subject, body, "lb")
    except BusMessageError as exc:
        assert str(exc)
    else:
        assert decoded.key


@FUZZ
@given(status=st.integers(100, 599), headers=st.dictionaries(st.sampled_from(
    ["Retry-After", "Content-Type", "X-Rate-Limit-Problem", "Sforce-Limit-Info"]), FIELD_TEXT, max_size=3),
    body=st.binary(max_size=200) | JSON.map(lambda d: json.dumps(d).encode()))
def test_http_classifier_total(status: int, headers: dict[str, str], body: bytes) -> None:
    err = classify_http(status, headers, body, system="fuzz")
    assert err is None or isinstance(err, LedgerbridgeError)
    if 500 <= status < 600 and status not in (501, 505):
        assert err is not None and err.kind.value == "transient"


@FUZZ
@given(data=st.data())
def test_contracts_refuse_with_validation_errors_only(data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(CONTRACTS))
    doc = data.draw(st.dictionaries(st.sampled_from(sorted(model.model_fields)), JSON | FIELD_TEXT, max_size=12))
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        assert exc.errors()
