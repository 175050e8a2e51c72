"""Prometheus metrics in business terms.

Two registries are rendered by ``/metrics``:

- the **process** registry (module level, shared by everything in the process): counters that code outside the
  service increments — API calls and 429s per target (:func:`record_api_call`, :func:`record_rate_limited`, for
  connectors), flow completions and failures (:func:`record_flow`), reconciliation variance
  (:func:`record_reconciliation`);
- the **app** registry (one per :func:`ledgerbridge.service.app.create_app`): webhook counters and accept latency,
  API requests, and gauges read from the state store at scrape time (:class:`StoreCollector`): dead letters by queue
  and age bucket, data freshness per system and domain, inbox and posting-run counts, workflows by name and status,
  and the posting-lag histogram (approved -> posted, per source version, fed incrementally from the journals
  posted since the previous scrape).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ledgerbridge.store.engine import snapshot_connection

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output

#: Process-wide registry (see the module doc).
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

TARGET_CALLS = Counter("ledgerbridge_target_api_calls", "Calls made to a target system's API, by outcome.",
                       ["target", "outcome"], registry=PROCESS_REGISTRY)
TARGET_429 = Counter("ledgerbridge_target_rate_limited", "Rate-limited answers (HTTP 429 and kin) per target.",
                     ["target"], registry=PROCESS_REGISTRY)
FLOW_RUNS = Counter("ledgerbridge_flow_runs", "Flow runs finished, by flow and outcome (completed | failed).",
                    ["flow", "outcome"], registry=PROCESS_REGISTRY)
RECON_UNEXPLAINED = Gauge("ledgerbridge_reconciliation_unexplained",
                          "Unexplained reconciliation variance (PSA vs ledger) of the last reconciliation.",
                          ["legal_entity", "period", "measure", "currency"], registry=PROCESS_REGISTRY)
RECON_VARIANCE = Gauge("ledgerbridge_reconciliation_variance",
                       "Total reconciliation variance (explained + unexplained) of the last reconciliation.",
                       ["legal_entity", "period", "measure", "currency"], registry=PROCESS_REGISTRY)


def record_api_call(target: str, status: int | str) -> None:
    """Count one call to ``target``'s API; ``status`` is the HTTP status or an outcome word (``timeout``...).
    A 429 is also counted by :func:`record_rate_limited`."""
    TARGET_CALLS.labels(target=target, outcome=str(status)).inc()
    if str(status) == "429":
        TARGET_429.labels(target=target).inc()


def record_rate_limited(target: str) -> None:
    """Count a rate-limited answer that is not a plain 429 (e.g. Salesforce REQUEST_LIMIT_EXCEEDED)."""
    TARGET_429.labels(target=target).inc()


def record_flow(flow: str, ok: bool, n: int = 1) -> None:
    FLOW_RUNS.labels(flow=flow, outcome="completed" if ok else "failed").inc(n)


def record_reconciliation(recon: Any) -> int:
    """Set the reconciliation gauges from a :class:`ledgerbridge.flows.reconcile.Reconciliation` (its ``cells``);
    returns the number of cells. Duck-typed so this module does not depend on the reconcile flow."""
    n = 0
    for c in getattr(recon, "cells", []):
        labels = {"legal_entity": c.legal_entity_id, "period": c.period, "measure": c.measure,
                  "currency": c.currency or ""}
        RECON_UNEXPLAINED.labels(**labels).set(float(Decimal(c.unexplained)))
        RECON_VARIANCE.labels(**labels).set(float(Decimal(c.variance)))
        n += 1
    return n


#: Dead-letter age buckets (label, lower bound in hours).
AGE_BUCKETS = (("lt_1h", 0.0), ("1h_24h", 1.0), ("1d_7d", 24.0), ("gt_7d", 168.0))
#: Posting lag buckets in seconds: 1 min .. 90 days.
LAG_BUCKETS = (60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400, 90 * 86400)


class AppMetrics:
    """The app registry and the instruments the service itself updates."""

    def __init__(self, engine: sa.Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.webhooks = Counter("ledgerbridge_webhooks", "Webhook deliveries by system and outcome "
                                "(accepted, duplicate, bad_signature, stale, replayed, invalid, unknown_system, "
                                "not_configured).", ["system", "outcome"], registry=r)
        self.accept_seconds = Histogram("ledgerbridge_webhook_accept_seconds",
                                        "Time from receiving a webhook to answering 202 (inbox write included).",
                                        ["system"], registry=r,
                                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.requests = Counter("ledgerbridge_api_requests", "API requests by route and status.",
                                ["route", "method", "status"], registry=r)
        self.posting_lag = Histogram("ledgerbridge_posting_lag_seconds",
                                     "Approved -> posted lag per source version (approved_at of the version to "
                                     "posted_at of the first journal carrying it).", ["legal_entity"],
                                     buckets=LAG_BUCKETS, registry=r)
        self.collector = StoreCollector(engine, self)
        r.register(self.collector)

    def render(self) -> bytes:
        self.collector.feed_lag()  # before rendering: the histogram is collected ahead of the store gauges
        return generate_latest(self.registry) + generate_latest(PROCESS_REGISTRY)


class StoreCollector(Collector):
    """Gauges read from the store at scrape time, and the incremental posting-lag feed."""

    def __init__(self, engine: sa.Engine, app: AppMetrics) -> None:
        self.engine = engine
        self.app = app
        self._lag_lock = threading.Lock()
        self._lag_mark: tuple[dt.datetime, str] | None = None  # (posted_at, journal id) of the last journal seen
        self._seen_versions: set[str] = set()

    def describe(self) -> list[Metric]:
        return []  # collected lazily: never touch the store at registration

    def collect(self) -> Iterator[Metric]:
        from ledgerbridge.store.schema import dead_letters, inbox, posting_runs

        now = dt.datetime.now(dt.UTC)
        dl = GaugeMetricFamily("ledgerbridge_dead_letters", "Open dead letters by queue and age bucket "
                               "(age since first seen).", labels=["queue", "age"])
        fresh = GaugeMetricFamily("ledgerbridge_data_freshness_seconds", "Seconds since the last item of a "
                                  "system and domain was received (stage=received) or processed "
                                  "(stage=processed).", labels=["system", "domain", "stage"])
        inbox_g = GaugeMetricFamily("ledgerbridge_inbox_items", "Inbox rows by status.", labels=["status"])
        runs = GaugeMetricFamily("ledgerbridge_posting_runs", "Posting runs by status.", labels=["status"])
        with snapshot_connection(self.engine) as conn:
            age = sa.case(*[(dead_letters.c.first_seen <= now - dt.timedelta(hours=h), name)
                            for name, h in reversed(AGE_BUCKETS[1:])], else_=AGE_BUCKETS[0][0])
            counts = {(q, a): int(n) for q, a, n in conn.execute(
                sa.select(dead_letters.c.queue, age, sa.func.count()).where(dead_letters.c.status == "open")
                .group_by(dead_letters.c.queue, age))}
            for q in ("operational", "financial"):
                for name, _ in AGE_BUCKETS:
                    dl.add_metric([q, name], counts.get((q, name), 0))
            for system, entity, last_rx, last_px in conn.execute(
                    sa.select(inbox.c.system, inbox.c.entity, sa.func.max(inbox.c.received_at),
                              sa.func.max(inbox.c.processed_at)).group_by(inbox.c.system, inbox.c.entity)):
                fresh.add_metric([system, entity, "received"], _age(now, last_rx))
                if last_px is not None:
                    fresh.add_metric([system, entity, "processed"], _age(now, last_px))
            for status, n in conn.execute(sa.select(inbox.c.status, sa.func.count()).group_by(inbox.c.status)):
                inbox_g.add_metric([status], int(n))
            for status, n in conn.execute(sa.select(posting_runs.c.status, sa.func.count())
                                          .group_by(posting_runs.c.status)):
                runs.add_metric([status], int(n))
        yield from (dl, fresh, inbox_g, runs)
        wf = self._workflows()
        if wf is not None:
            yield wf

    def _workflows(self) -> Metric | None:
        from ledgerbridge import runtime as rt

        if not rt.Runtime.is_launched():
            return None
        g = GaugeMetricFamily("ledgerbridge_workflows", "Durable workflows (most recent 1,000) by name and status.",
                              labels=["name", "status"])
        counts: dict[tuple[str, str], int] = {}
        for w in rt.list_workflows(limit=1000):
            k = (str(w["name"]), str(w["status"]))
            counts[k] = counts.get(k, 0) + 1
        for (name, status), n in sorted(counts.items()):
            g.add_metric([name, status], n)
        return g

    def feed_lag(self, max_journals: int = 2000) -> None:
        """Observe approved -> posted for the source versions of journals posted since the last scrape (at most
        ``max_journals`` journals per call; the rest on the next scrape)."""
        if not self._lag_lock.acquire(blocking=False):
            return  # another scrape is feeding
        try:
            with snapshot_connection(self.engine) as conn:
                self._feed_lag(conn, max_journals)
        finally:
            self._lag_lock.release()

    def _feed_lag(self, conn: sa.Connection, max_journals: int) -> None:
        from ledgerbridge.store.schema import inbox, posted_journal_lines, posted_journals

        q = sa.select(posted_journals.c.id, posted_journals.c.posted_at, posted_journals.c.legal_entity_id)
        if self._lag_mark is not None:
            at, jid = self._lag_mark
            q = q.where(sa.or_(posted_journals.c.posted_at > at,
                               sa.and_(posted_journals.c.posted_at == at, posted_journals.c.id > jid)))
        heads = conn.execute(q.order_by(posted_journals.c.posted_at, posted_journals.c.id)
                             .limit(max_journals)).all()
        if not heads:
            return
        info = {h.id: (h.posted_at, h.legal_entity_id) for h in heads}
        refs: dict[str, tuple[dt.datetime, str]] = {}
        for jid, lineage in conn.execute(sa.select(posted_journal_lines.c.journal_id,
                                                   posted_journal_lines.c.lineage)
                                         .where(posted_journal_lines.c.journal_id.in_(list(info)))):
            for ref in (lineage or {}).get("refs", []):  # {"refs": [SourceRef...], "count": n}
                key = f"{ref['system']}:{ref['entity']}:{ref['id']}:{ref['version']}"
                if key not in self._seen_versions and (key not in refs or info[jid][0] < refs[key][0]):
                    refs[key] = info[jid]  # the first journal posted carrying the version
        keys = list(refs)
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            for key, payload in conn.execute(sa.select(inbox.c.idempotency_key, inbox.c.payload)
                                             .where(inbox.c.idempotency_key.in_(part))):
                approved = (payload or {}).get("approved_at")
                if not approved:
                    continue
                posted_at, entity = refs[key]
                lag = (_utc(posted_at) - _utc(dt.datetime.fromisoformat(approved))).total_seconds()
                self.app.posting_lag.labels(legal_entity=entity).observe(max(lag, 0.0))
        self._seen_versions.update(keys)
        last = heads[-1]
        self._lag_mark = (last.posted_at, last.id)


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _age(now: dt.datetime, t: dt.datetime) -> float:
    return max((now - _utc(t)).total_seconds(), 0.0)
