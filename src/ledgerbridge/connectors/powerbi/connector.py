"""Power BI push datasets as a reporting target for the curated marts (LEGACY: Microsoft is retiring real-time
streaming / push-style datasets; the recommended path is BI reading the DuckDB/Parquet or PostgreSQL marts directly,
see docs/marts.md and docs/connectors/powerbi.md).

:meth:`PowerBiTarget.publish_marts` takes the mart (a DuckDB file, an open DuckDB connection, a flow context whose
mart is built on the fly, or plain ``{table: rows}``) and a period, and:

1. finds the dataset **by name** in the workspace (Power BI allows two datasets with one name, so creating
   without looking first would duplicate it); creates it (``defaultMode: Push``) only when absent; a table whose
   columns differ from the mart's is updated with ``PUT .../tables/{name}``;
2. per table: ``DELETE .../rows`` (push datasets delete **all** rows of a table, never by filter), then POSTs the
   rows in chunks of at most 10,000, paced at 120 POSTs per minute per dataset (headroom 90%).

Replace strategy (decided, and the honest consequence): **a table holds exactly one load**. Publishing period P
replaces the whole table with P's rows; to keep several periods in Power BI publish them together
(``period=None``: every period of the mart). Re-publishing is idempotent in its end state (no duplicates); while a
publish runs, and after a crash mid-publish, a table shows a partial load until the next publish completes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgerbridge.connectors.base import BatchSizes, Capabilities, IdempotencyMechanism, Limits, SystemKind
from ledgerbridge.connectors.powerbi.client import API_URL, AUTHORITY, MAX_ROWS_PER_POST, PowerBiClient
from ledgerbridge.connectors.powerbi.mapping import SYSTEM, dataset_request, row_json, same_schema, table_schema
from ledgerbridge.errors import ConflictError, PermanentError

#: the curated mart tables published by default (docs/marts.md)
DEFAULT_TABLES = ("invoice_status", "revenue_by_method", "revenue", "gl_balances", "project_margin",
                  "project_margin_functional", "utilization", "wip", "mart_info")
RETENTION_ROWS = {"basicFIFO": 200_000, "None": 5_000_000}
ROWS_PER_HOUR = 1_000_000

CAPABILITIES = Capabilities(
    connector=SYSTEM,
    system_kind=SystemKind.FILE,  # a sink of whole snapshots (there is no "reporting" kind yet)
    writes=frozenset({"reporting_mart"}),
    # the dataset is looked up by name before it is created; rows replace the table (delete all, then push)
    idempotency=IdempotencyMechanism.LOOKUP_BEFORE_CREATE,
    limits=Limits(requests_per_second=2.0, concurrency=1),  # 120 POST rows per minute per dataset, 1 in flight
    batch_sizes=BatchSizes(write=MAX_ROWS_PER_POST),
    supports_read_back=False,  # rows cannot be read back (only DAX executeQueries)
)


@dataclass
class PublishReport:
    """What one publish did: the dataset, rows and POSTs per table, timings."""

    dataset_id: str
    dataset_created: bool
    period: str | None
    load_id: str
    rows: dict[str, int] = field(default_factory=dict)
    posts: dict[str, int] = field(default_factory=dict)
    schema_updates: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "dataset_created": self.dataset_created, "period": self.period,
                "load_id": self.load_id, "rows": dict(self.rows), "posts": dict(self.posts),
                "schema_updates": list(self.schema_updates), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class MartTable:
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, DuckDB type)
    rows: tuple[tuple[Any, ...], ...]


def _duck_tables(con: Any, tables: Sequence[str], period: str | None) -> list[MartTable]:
    out = []
    for name in tables:
        cols = tuple((str(r[0]), str(r[1])) for r in con.execute(f'DESCRIBE "{name}"').fetchall())
        if period is not None and any(c == "period" for c, _ in cols):
            rows = con.execute(f'SELECT * FROM "{name}" WHERE period = ? ORDER BY ALL', [period]).fetchall()
        else:
            rows = con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall()
        out.append(MartTable(name, cols, tuple(tuple(r) for r in rows)))
    return out


def read_mart(source: Any, tables: Sequence[str], period: str | None) -> list[MartTable]:
    """Mart tables from a DuckDB file path, an open DuckDB connection, a flow context (its mart is built into a
    temporary file first) or ``{table: MartTable}``."""
    if isinstance(source, Mapping):
        return [source[t] for t in tables]
    if isinstance(source, str | Path):
        from ledgerbridge.flows.marts import open_mart

        con = open_mart(Path(source))
        try:
            return _duck_tables(con, tables, period)
        finally:
            con.close()
    if hasattr(source, "execute"):
        return _duck_tables(source, tables, period)
    if hasattr(source, "engine") and hasattr(source, "reference"):  # a FlowContext
        import tempfile

        from ledgerbridge.flows.marts import build_marts

        with tempfile.TemporaryDirectory(prefix="ledgerbridge-powerbi-") as td:
            report = build_marts(source, Path(td) / "mart.duckdb")
            return read_mart(report.path, tables, period)
    raise TypeError(f"publish_marts: cannot read a mart from {type(source).__name__}")


class PowerBiTarget:
    """Publishes the curated marts into one push dataset of one workspace (``group_id``)."""

    def __init__(self, client: PowerBiClient, *, group_id: str, dataset_name: str = "ledgerbridge marts",
                 tables: Iterable[str] = DEFAULT_TABLES, retention: str = "basicFIFO") -> None:
        if retention not in RETENTION_ROWS:
            raise ValueError(f"retention must be one of {sorted(RETENTION_ROWS)}")
        self.client = client
        self.group_id = group_id
        self.dataset_name = dataset_name
        self.tables = tuple(tables)
        self.retention = retention

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, client_secret: str, system: str = SYSTEM
                     ) -> PowerBiTarget:
        problems = [f"options.{k} is required (text)" for k in ("tenant_id", "client_id", "group_id")
                    if not isinstance(options.get(k), str) or not options.get(k)]
        tables = options.get("tables", DEFAULT_TABLES)
        if not isinstance(tables, list | tuple) or not all(isinstance(t, str) and t.isidentifier() for t in tables):
            problems.append("options.tables must be a list of mart table names (e.g. invoice_status)")
        if options.get("retention", "basicFIFO") not in RETENTION_ROWS:
            problems.append(f"options.retention must be one of {sorted(RETENTION_ROWS)}")
        if not client_secret:
            problems.append("secrets.client_secret is empty — reference it with ${env:...} or ${file:...}")
        if problems:
            raise PermanentError(f"{SYSTEM} system {system!r}: " + "; ".join(problems), code="LB-P001",
                                 details={"system": system, "problems": problems})
        client = PowerBiClient(str(options["tenant_id"]), str(options["client_id"]), client_secret,
                               api_url=str(options.get("api_url", API_URL)),
                               authority=str(options.get("authority", AUTHORITY)),
                               timeout=float(options.get("timeout", 60)),
                               posts_per_window=int(options.get("posts_per_minute", 120)),
                               window=float(options.get("window_seconds", 60.0)),
                               headroom=float(options.get("headroom", 0.9)), system=system)
        return cls(client, group_id=str(options["group_id"]),
                   dataset_name=str(options.get("dataset_name", "ledgerbridge marts")), tables=tuple(tables),
                   retention=str(options.get("retention", "basicFIFO")))

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def check_access(self) -> dict[str, Any]:
        """The workspace as the app sees it; a clear error when the app is not a member (set-up step 3)."""
        found = [g for g in self.client.groups(self.group_id) if str(g.get("id")) == self.group_id]
        if not found:
            raise PermanentError(f"{SYSTEM}: the app is not a member of workspace {self.group_id} — add it (or its "
                                 "security group) as Member or Admin under the workspace's Manage access, and enable "
                                 "'Service principals can use Fabric APIs' for its group", code="LB-P003",
                                 details={"group_id": self.group_id})
        return found[0]

    def ensure_dataset(self, schemas: Sequence[Mapping[str, Any]]) -> tuple[str, bool, list[str]]:
        """The dataset id (found by name, else created with ``schemas``), whether it was created, and the tables
        whose schema was updated (``PUT``) or added."""
        found = [d for d in self.client.datasets(self.group_id) if d.get("name") == self.dataset_name]
        if len(found) > 1:
            raise ConflictError(f"{SYSTEM}: workspace {self.group_id} holds {len(found)} datasets named "
                                f"{self.dataset_name!r} (ids {[d.get('id') for d in found]}) — delete the extra ones "
                                "in Power BI; ledgerbridge publishes into exactly one", code="LB-C001")
        if not found:
            body = dataset_request(self.dataset_name, schemas)
            created = self.client.create_dataset(self.group_id, body, self.retention)
            return str(created["id"]), True, []
        dataset_id = str(found[0]["id"])
        held = {str(t.get("name")): t for t in self.client.tables(self.group_id, dataset_id)}
        updated = []
        for schema in schemas:
            h = held.get(str(schema["name"]))
            if h is None or not same_schema(h, schema):
                self.client.put_table(self.group_id, dataset_id, schema)
                updated.append(str(schema["name"]))
        return dataset_id, False, updated

    def publish_marts(self, source: Any, period: str | None = None, *, tables: Sequence[str] | None = None,
                      load_id: str | None = None) -> PublishReport:
        """Publish the mart tables (rows of ``period`` where a table has a ``period`` column; every row when
        ``period`` is None): find-or-create the dataset, then per table delete all rows and push the new ones.
        Everything is converted and checked (limits, exact numbers) before the first delete."""
        t0 = time.perf_counter()
        marts = read_mart(source, tuple(tables or self.tables), period)
        schemas = [table_schema(m.name, m.columns) for m in marts]
        cap = RETENTION_ROWS[self.retention]
        payload: dict[str, list[dict[str, Any]]] = {}
        for m in marts:
            if len(m.rows) > cap:
                raise PermanentError(f"{SYSTEM}: table {m.name} has {len(m.rows)} rows for {period or 'all periods'};"
                                     f" a push table keeps {cap} with retention {self.retention} — publish one period "
                                     "or read the mart directly", code="LB-P001")
            names = [c for c, _ in m.columns]
            payload[m.name] = [row_json(names, r, table=m.name) for r in m.rows]
        total = sum(len(v) for v in payload.values())
        if total > ROWS_PER_HOUR:
            raise PermanentError(f"{SYSTEM}: {total} rows exceed the {ROWS_PER_HOUR} rows per hour a push dataset "
                                 "accepts", code="LB-P001")
        dataset_id, created, updated = self.ensure_dataset(schemas)
        report = PublishReport(dataset_id, created, period, load_id or uuid.uuid4().hex[:12],
                               schema_updates=updated)
        for name, rows in payload.items():
            self.client.delete_rows(self.group_id, dataset_id, name)
            report.posts[name] = self.client.post_rows(self.group_id, dataset_id, name, rows)
            report.rows[name] = len(rows)
        report.seconds = time.perf_counter() - t0
        return report
