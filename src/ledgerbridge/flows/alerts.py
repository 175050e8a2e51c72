"""Business metrics from the engine's own records, and alert rules over them.

:func:`compute_metrics` reads the state store (never a target) and returns a :class:`BusinessMetrics`:

* **posting lag** — per source version: ``approved_at`` of the version (its inbox payload) to ``posted_at`` of the
  journals of the first posting run that posted its staged lines;
* **billing lag** — per source version billed: ``approved_at`` to the ``created_at`` of the first invoice whose
  lineage names it (``store.invoices``);
* **exception aging** — open dead letters per queue in age buckets (since first seen), the oldest one;
* **freshness** — per system and domain, hours since the last item was received, stale over the threshold
  (``alerts.stale_after_hours``, per domain ``alerts.stale_after_hours_by_domain``);
* **flow completion** — posting runs posted vs failed, inbox items processed vs dead;
* **SLA breaches** — versions posted later than ``alerts.posting_sla_hours`` after approval, plus approved
  versions still unposted past it;
* **reconciliation variance** — from the newest stored reconciliation run (flows/recon_runs.py);
* **ROI** — items posted automatically vs handled by a person (dead letters replayed or discarded), billing cycle
  time, reconciliation exceptions per closed period.

:meth:`BusinessMetrics.values` flattens them into the named numbers alert rules refer to (:data:`METRICS`).
:func:`check_alerts` evaluates the configured rules once (``ledgerbridge alerts check``): a rule fires when its
condition has held for ``for_minutes`` (state kept in ``alert_state``), once per breach, to its webhook (httpx POST
of a JSON body) or the log; each alert carries a link to its runbook under ``docs/runbooks/``.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
import typer

from ledgerbridge.config.schema import AlertRule, AlertsConfig
from ledgerbridge.flows.context import FlowContext
from ledgerbridge.store.engine import snapshot_connection
from ledgerbridge.store.schema import alert_state as as_t
from ledgerbridge.store.schema import dead_letters as dl_t
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import invoices as inv_t
from ledgerbridge.store.schema import periods as periods_t
from ledgerbridge.store.schema import posted_journals as pj_t
from ledgerbridge.store.schema import posting_runs as runs_t
from ledgerbridge.store.schema import staging_lines as staging_t
from ledgerbridge.store.schema import stewardship_items as st_t

log = structlog.get_logger("ledgerbridge.alerts")

#: Dead-letter age buckets (label, lower bound in hours) — the same as the /metrics gauges.
AGE_BUCKETS = (("< 1 h", 0.0), ("1-24 h", 1.0), ("1-7 d", 24.0), ("> 7 d", 168.0))
#: Lag histogram buckets (label, upper bound in hours).
LAG_BUCKETS = (("<1h", 1.0), ("1-4h", 4.0), ("4-24h", 24.0), ("1-2d", 48.0), ("2-7d", 168.0),
               ("7-30d", 720.0), (">30d", float("inf")))

#: metric name -> (description, runbook page)
METRICS: dict[str, tuple[str, str]] = {
    "posting_lag_p50_hours": ("median approved -> posted, hours", "posting-lag.md"),
    "posting_lag_p95_hours": ("95th percentile approved -> posted, hours", "posting-lag.md"),
    "posting_lag_max_hours": ("longest approved -> posted, hours", "posting-lag.md"),
    "billing_lag_p95_days": ("95th percentile approved -> invoiced, days", "billing-lag.md"),
    "dead_letters_open": ("open dead letters, both queues", "dead-letters.md"),
    "dead_letters_open_financial": ("open financial dead letters", "dead-letters.md"),
    "dead_letters_open_operational": ("open operational dead letters", "dead-letters.md"),
    "dead_letter_oldest_hours": ("age of the oldest open dead letter, hours", "dead-letters.md"),
    "stale_domains": ("systems/domains with no new item within their stale threshold", "freshness.md"),
    "freshness_max_hours": ("hours since the stalest system/domain last received an item", "freshness.md"),
    "posting_run_failure_rate": ("failed posting runs / finished posting runs (0-1)", "flow-failures.md"),
    "inbox_dead_rate": ("inbox items dead / decided (0-1)", "flow-failures.md"),
    "sla_breaches": ("versions posted, or still unposted, later than the posting SLA", "sla-breaches.md"),
    "recon_unexplained_abs": ("sum of |unexplained variance| of the newest reconciliation", "reconciliation.md"),
    "recon_unexplained_cells": ("cells with unexplained variance in the newest reconciliation", "reconciliation.md"),
    "recon_variance_abs": ("sum of |variance| (explained or not) of the newest reconciliation", "reconciliation.md"),
    "stewardship_open": ("master-data conflicts waiting for a decision", "stewardship.md"),
}


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _hours(a: dt.datetime, b: dt.datetime) -> float:
    return (_utc(b) - _utc(a)).total_seconds() / 3600.0


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _histogram(values: list[float]) -> list[tuple[str, int]]:
    counts = [0] * len(LAG_BUCKETS)
    for v in values:
        for i, (_label, upper) in enumerate(LAG_BUCKETS):
            if v < upper:
                counts[i] += 1
                break
    return [(label, n) for (label, _), n in zip(LAG_BUCKETS, counts, strict=True)]


def _ref_key(ref: Any) -> str | None:
    if isinstance(ref, str):
        return ref
    if isinstance(ref, dict):
        return f"{ref.get('system')}:{ref.get('entity')}:{ref.get('id')}:{ref.get('version')}"
    if isinstance(ref, list | tuple) and len(ref) == 4:
        return ":".join(str(x) for x in ref)
    return None


@dataclass
class BusinessMetrics:
    at: dt.datetime
    posting_lag_hours: dict[str, float] = field(default_factory=dict)  # version key -> hours
    posting_lag_by_entity: dict[str, list[float]] = field(default_factory=dict)
    billing_lag_hours: dict[str, float] = field(default_factory=dict)
    aging: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # queue -> [(bucket, n)]
    dead_letter_oldest_hours: float | None = None
    freshness: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, int] = field(default_factory=dict)
    inbox: dict[str, int] = field(default_factory=dict)
    sla_hours: float = 72.0
    sla_late_posted: int = 0
    sla_unposted: int = 0
    recon: dict[str, Any] | None = None
    roi: dict[str, Any] = field(default_factory=dict)
    stewardship_open: int = 0

    @property
    def lag_values(self) -> list[float]:
        return list(self.posting_lag_hours.values())

    def lag_histogram(self) -> list[tuple[str, int]]:
        return _histogram(self.lag_values)

    def values(self) -> dict[str, float | None]:
        """The named numbers alert rules refer to (:data:`METRICS`); ``None`` = no data yet."""
        lag = self.lag_values
        bill = _pct(list(self.billing_lag_hours.values()), 0.95)
        open_by_q = {q: sum(n for _, n in b) for q, b in self.aging.items()}
        finished = self.runs.get("posted", 0) + self.runs.get("failed", 0)
        decided = self.inbox.get("processed", 0) + self.inbox.get("dead", 0)
        r = self.recon or {}
        return {
            "posting_lag_p50_hours": _pct(lag, 0.5), "posting_lag_p95_hours": _pct(lag, 0.95),
            "posting_lag_max_hours": max(lag) if lag else None,
            "billing_lag_p95_days": bill / 24.0 if bill is not None else None,
            "dead_letters_open": float(sum(open_by_q.values())),
            "dead_letters_open_financial": float(open_by_q.get("financial", 0)),
            "dead_letters_open_operational": float(open_by_q.get("operational", 0)),
            "dead_letter_oldest_hours": self.dead_letter_oldest_hours,
            "stale_domains": float(sum(1 for f in self.freshness if f["stale"])),
            "freshness_max_hours": max((f["hours"] for f in self.freshness), default=None),
            "posting_run_failure_rate": self.runs.get("failed", 0) / finished if finished else None,
            "inbox_dead_rate": self.inbox.get("dead", 0) / decided if decided else None,
            "sla_breaches": float(self.sla_late_posted + self.sla_unposted),
            "recon_unexplained_abs": float(Decimal(r["unexplained_abs"])) if r else None,
            "recon_unexplained_cells": float(r["unexplained_cells"]) if r else None,
            "recon_variance_abs": float(Decimal(r["variance_abs"])) if r else None,
            "stewardship_open": float(self.stewardship_open),
        }

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "values": self.values(), "lag_histogram": self.lag_histogram(),
                "aging": self.aging, "freshness": self.freshness, "runs": self.runs, "inbox": self.inbox,
                "sla": {"hours": self.sla_hours, "late_posted": self.sla_late_posted, "unposted": self.sla_unposted},
                "recon": self.recon, "roi": self.roi}


def compute_metrics(ctx: FlowContext, *, now: dt.datetime | None = None,
                    settings: AlertsConfig | None = None) -> BusinessMetrics:
    """Every business metric from the store (module doc); ``now`` for tests."""
    from ledgerbridge.flows import recon_runs

    cfg = settings or ctx.config.alerts
    now = _utc(now or dt.datetime.now(dt.UTC))
    m = BusinessMetrics(at=now, sla_hours=cfg.posting_sla_hours)
    with snapshot_connection(ctx.engine) as conn:
        approved = _approved_at(conn)
        first_posted = _first_posted(conn)
        for key, (posted_at, entity) in first_posted.items():
            a = approved.get(key)
            if a is not None:
                lag = max(_hours(a, posted_at), 0.0)
                m.posting_lag_hours[key] = lag
                m.posting_lag_by_entity.setdefault(entity, []).append(lag)
                if lag > cfg.posting_sla_hours:
                    m.sla_late_posted += 1
        unposted = _unposted_keys(conn)
        m.sla_unposted = sum(1 for key, a in approved.items() if key not in first_posted
                             and _hours(a, now) > cfg.posting_sla_hours and key in unposted)
        invoiced = _first_invoiced(conn)
        for key, at in invoiced.items():
            a = approved.get(key)
            if a is not None:
                m.billing_lag_hours[key] = max(_hours(a, at), 0.0)
        m.aging, m.dead_letter_oldest_hours = _aging(conn, now)
        m.freshness = _freshness(conn, now, cfg)
        m.runs = {s: int(n) for s, n in conn.execute(sa.select(runs_t.c.status, sa.func.count())
                                                     .group_by(runs_t.c.status))}
        m.inbox = {s: int(n) for s, n in conn.execute(sa.select(inbox_t.c.status, sa.func.count())
                                                      .group_by(inbox_t.c.status))}
        m.stewardship_open = int(conn.execute(sa.select(sa.func.count()).select_from(st_t)
                                              .where(st_t.c.status == "open")).scalar_one())
        latest = recon_runs.latest_run(conn)
        if latest is not None:
            m.recon = {"run_id": latest.id, "at": latest.at.isoformat(), "ok": latest.ok,
                       "unexplained_cells": latest.unexplained_cells,
                       "unexplained_abs": latest.summary.get("unexplained_abs", "0"),
                       "variance_abs": latest.summary.get("variance_abs", "0")}
        m.roi = _roi(conn, m, first_posted)
    return m


def _approved_at(conn: sa.Connection) -> dict[str, dt.datetime]:
    i = inbox_t.c
    out: dict[str, dt.datetime] = {}
    for key, approved in conn.execute(sa.select(i.idempotency_key, i.payload["approved_at"].as_string()).where(
            i.entity.in_(("time_entry", "expense")))):
        if approved:
            out[key] = _utc(dt.datetime.fromisoformat(approved))
    return out


def _first_posted(conn: sa.Connection) -> dict[str, tuple[dt.datetime, str]]:
    """Source version key -> (posted_at, legal entity) of the first posting run that posted one of its lines: the
    earliest ``posted_at`` of that run's journals. (Staging lines name their run; a journal line's lineage lists its
    source versions only up to a limit, so it is not used here.)"""
    s = staging_t.c
    run_posted = (sa.select(pj_t.c.posting_run_id.label("run_id"), sa.func.min(pj_t.c.posted_at).label("at"))
                  .group_by(pj_t.c.posting_run_id).subquery())
    q = (sa.select(s.source_system, s.source_entity, s.source_id, s.source_version, s.legal_entity_id,
                   sa.func.min(run_posted.c.at))
         .join(run_posted, run_posted.c.run_id == s.posting_run_id)
         .where(s.status == "posted", s.sign == 1, s.source_entity.in_(("time_entry", "expense")))
         .group_by(s.source_system, s.source_entity, s.source_id, s.source_version, s.legal_entity_id))
    out: dict[str, tuple[dt.datetime, str]] = {}
    for system, entity, item, version, le, at in conn.execute(q):
        key = f"{system}:{entity}:{item}:{version}"
        if key not in out or at < out[key][0]:
            out[key] = (at, le)
    return out


def _unposted_keys(conn: sa.Connection) -> set[str]:
    s = staging_t.c
    return {f"{a}:{b}:{c}:{d}" for a, b, c, d in conn.execute(
        sa.select(s.source_system, s.source_entity, s.source_id, s.source_version).where(
            s.status.in_(("staged", "in_run", "dead")), s.sign == 1))}


def _first_invoiced(conn: sa.Connection) -> dict[str, dt.datetime]:
    out: dict[str, dt.datetime] = {}
    for created, lineage, kind in conn.execute(sa.select(inv_t.c.created_at, inv_t.c.lineage, inv_t.c.kind)):
        if kind == "credit_note":
            continue
        refs = lineage.get("refs", []) if isinstance(lineage, dict) else (lineage or [])
        for ref in refs:
            key = _ref_key(ref)
            if key is not None and (key not in out or created < out[key]):
                out[key] = created
    return out


def _aging(conn: sa.Connection, now: dt.datetime) -> tuple[dict[str, list[tuple[str, int]]], float | None]:
    counts: dict[str, list[int]] = {q: [0] * len(AGE_BUCKETS) for q in ("operational", "financial")}
    oldest: float | None = None
    for queue, first_seen in conn.execute(sa.select(dl_t.c.queue, dl_t.c.first_seen).where(dl_t.c.status == "open")):
        age = max(_hours(first_seen, now), 0.0)
        oldest = age if oldest is None else max(oldest, age)
        idx = max(i for i, (_l, lower) in enumerate(AGE_BUCKETS) if age >= lower)
        counts.setdefault(queue, [0] * len(AGE_BUCKETS))[idx] += 1
    return ({q: [(AGE_BUCKETS[i][0], n) for i, n in enumerate(c)] for q, c in counts.items()}, oldest)


def _freshness(conn: sa.Connection, now: dt.datetime, cfg: AlertsConfig) -> list[dict[str, Any]]:
    i = inbox_t.c
    out = []
    for system, entity, last in conn.execute(sa.select(i.system, i.entity, sa.func.max(i.received_at))
                                             .group_by(i.system, i.entity).order_by(i.system, i.entity)):
        hours = max(_hours(last, now), 0.0)
        limit = cfg.stale_after_hours_by_domain.get(entity, cfg.stale_after_hours)
        out.append({"system": system, "domain": entity, "last_received": _utc(last).isoformat(),
                    "hours": round(hours, 2), "stale_after_hours": limit, "stale": hours > limit})
    return out


def _roi(conn: sa.Connection, m: BusinessMetrics, first_posted: dict[str, Any]) -> dict[str, Any]:
    d = dl_t.c
    manual = {s: int(n) for s, n in conn.execute(sa.select(d.status, sa.func.count()).where(
        d.status.in_(("replayed", "discarded"))).group_by(d.status))}
    handled_keys = {str(k).split("@", 1)[0] for (k,) in conn.execute(sa.select(d.item_key).where(
        d.status.in_(("replayed", "discarded"))))}
    items = {k.rsplit(":", 1)[0] for k in first_posted}
    auto = sum(1 for k in items if k.split(":")[2] not in handled_keys)
    billing = list(m.billing_lag_hours.values())
    closed = conn.execute(sa.select(periods_t.c.legal_entity_id, periods_t.c.period).where(
        periods_t.c.status.in_(("closed", "locked")))).all()
    exceptions = _recon_exceptions(conn, {(e, p) for e, p in closed})
    return {"items_posted": len(items), "auto_posted": auto, "manually_replayed": manual.get("replayed", 0),
            "manually_discarded": manual.get("discarded", 0),
            "auto_rate": round(auto / len(items), 4) if items else None,
            "billing_cycle_days_avg": round(sum(billing) / len(billing) / 24.0, 2) if billing else None,
            "closed_periods": len(closed), "recon_exceptions_per_close": exceptions}


def _recon_exceptions(conn: sa.Connection, closed: set[tuple[str, str]]) -> float | None:
    """Average per closed period of the explaining items other than redating (and unexplained cells) in the newest
    stored reconciliation of that period."""
    from ledgerbridge.flows.recon_runs import rc_t, rr_t

    if not closed:
        return None
    newest: dict[tuple[str, str], tuple[dt.datetime, str]] = {}
    for run_id, at, e, p in conn.execute(sa.select(rr_t.c.id, rr_t.c.at, rc_t.c.legal_entity_id, rc_t.c.period)
                                         .join(rc_t, rc_t.c.run_id == rr_t.c.id).distinct()):
        if (e, p) in closed and ((e, p) not in newest or at > newest[(e, p)][0]):
            newest[(e, p)] = (at, run_id)
    if not newest:
        return None
    total = 0
    for (e, p), (_at, run_id) in newest.items():
        for (detail,) in conn.execute(sa.select(rc_t.c.detail).where(
                rc_t.c.run_id == run_id, rc_t.c.legal_entity_id == e, rc_t.c.period == p)):
            total += sum(1 for x in detail.get("explanations", []) if x["kind"] not in ("redated_in", "redated_out"))
            total += 1 if Decimal(detail.get("unexplained") or "0") != 0 else 0
    return round(total / len(newest), 2)


# --------------------------------------------------------------------------------------------------- alerts

_OPS: dict[str, Callable[[Any, Any], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                                               "<=": operator.le}


@dataclass
class AlertOutcome:
    rule: str
    metric: str
    value: float | None
    threshold: str
    state: str  # ok | pending | firing | fired (already notified) | resolved | no_data
    severity: str
    runbook: str
    breach_since: str | None = None
    notified: str | None = None  # webhook URL / "log"
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def runbook_for(rule: AlertRule, cfg: AlertsConfig) -> str:
    if rule.runbook:
        return rule.runbook
    return f"{cfg.runbook_base.rstrip('/')}/{METRICS[rule.metric][1]}"


def validate_rules(cfg: AlertsConfig) -> None:
    for rule in cfg.rules:
        if rule.metric not in METRICS:
            raise ValueError(f"alerts.rules[{rule.name}]: unknown metric {rule.metric!r} — use one of "
                             f"{', '.join(sorted(METRICS))} (docs/dashboard.md lists them)")


def check_alerts(ctx: FlowContext, *, now: dt.datetime | None = None, metrics: BusinessMetrics | None = None,
                 client: httpx.Client | None = None) -> list[AlertOutcome]:
    """Evaluate every configured rule once, notify the ones that start firing, record their state."""
    cfg = ctx.config.alerts
    validate_rules(cfg)
    now = _utc(now or dt.datetime.now(dt.UTC))
    m = metrics or compute_metrics(ctx, now=now)
    values = m.values()
    out: list[AlertOutcome] = []
    with ctx.engine.begin() as conn:
        state = {r.rule: r for r in conn.execute(sa.select(as_t))}
        for rule in cfg.rules:
            v = values[rule.metric]
            prev = state.get(rule.name)
            o = AlertOutcome(rule.name, rule.metric, v, str(rule.threshold), "ok", rule.severity,
                             runbook_for(rule, cfg))
            since = _utc(prev.breach_since) if prev is not None and prev.breach_since is not None else None
            fired = prev is not None and prev.fired_at is not None
            breach = v is not None and _OPS[rule.op](Decimal(str(v)), rule.threshold)
            if v is None:
                o.state = "no_data"
            elif breach:
                since = since or now
                o.breach_since = since.isoformat()
                if (now - since).total_seconds() >= rule.for_minutes * 60:
                    o.state = "fired" if fired else "firing"
                else:
                    o.state = "pending"
            else:
                o.state = "resolved" if fired else "ok"
                since = None
            if o.state in ("firing", "resolved"):
                _notify(rule, cfg, o, client)
            fired_at = (now if o.state == "firing" else prev.fired_at if o.state == "fired" and prev else None)
            row = {"rule": rule.name, "breach_since": since, "last_value": None if v is None else repr(v),
                   "last_checked_at": now, "fired_at": fired_at}
            if prev is None:
                conn.execute(as_t.insert().values(**row))
            else:
                conn.execute(as_t.update().where(as_t.c.rule == rule.name).values(**row))
            out.append(o)
    return out


def _notify(rule: AlertRule, cfg: AlertsConfig, o: AlertOutcome, client: httpx.Client | None) -> None:
    body = {"alert": rule.name, "status": "firing" if o.state == "firing" else "resolved",
            "severity": rule.severity, "metric": rule.metric, "description": METRICS[rule.metric][0],
            "value": o.value, "op": rule.op, "threshold": str(rule.threshold), "for_minutes": rule.for_minutes,
            "breach_since": o.breach_since, "runbook": o.runbook}
    url = rule.webhook_url or cfg.webhook_url
    if url is None:
        (log.warning if o.state == "firing" else log.info)("alert." + body["status"], **body)
        o.notified = "log"
        return
    try:
        if client is not None:
            resp = client.post(url, json=body, timeout=10.0)
        else:
            resp = httpx.post(url, json=body, timeout=10.0)
        resp.raise_for_status()
        o.notified = url
    except httpx.HTTPError as exc:
        o.error = f"webhook {url} failed: {type(exc).__name__}: {exc} — the alert is logged instead"
        log.error("alert.webhook_failed", url=url, error=str(exc), **body)
        o.notified = "log"


# --------------------------------------------------------------------------------------------------- CLI

alerts_app = typer.Typer(help="Business metrics and alert rules (config: alerts).", no_args_is_help=True)


def _ctx(config: Path | None) -> FlowContext:
    from ledgerbridge.flows.cli import make_context

    return make_context(config, load_master=False)


@alerts_app.command("check")
def check_command(config: Path | None = typer.Option(None, "--config", "-c", help="Configuration file."),
                  as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Evaluate the alert rules once; exit 1 when any rule is firing."""
    from rich.console import Console

    ctx = _ctx(config)
    try:
        outcomes = check_alerts(ctx)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        typer.echo(json.dumps([o.to_json() for o in outcomes], indent=2))
    else:
        console = Console()
        if not outcomes:
            console.print("No alert rules configured (alerts.rules); see docs/dashboard.md.")
        for o in outcomes:
            colour = {"firing": "red", "fired": "red", "pending": "yellow"}.get(o.state, "green")
            console.print(f"[{colour}]{o.state:9}[/{colour}] {o.rule}: {o.metric} = {o.value} "
                          f"(threshold {o.threshold}) runbook {o.runbook}" + (f"  {o.error}" if o.error else ""))
    if any(o.state in ("firing", "fired") for o in outcomes):
        raise typer.Exit(1)


@alerts_app.command("metrics")
def metrics_command(config: Path | None = typer.Option(None, "--config", "-c", help="Configuration file."),
                    as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the business metrics alert rules can refer to."""
    m = compute_metrics(_ctx(config))
    if as_json:
        typer.echo(json.dumps(m.to_json(), indent=2, default=str))
        return
    for name, value in m.values().items():
        typer.echo(f"{name:32} {'—' if value is None else round(value, 4)}   {METRICS[name][0]}")


def lag_by_entity(m: BusinessMetrics) -> dict[str, dict[str, float | None]]:
    return {e: {"p50": _pct(v, 0.5), "p95": _pct(v, 0.95), "n": float(len(v))}
            for e, v in sorted(m.posting_lag_by_entity.items())}


