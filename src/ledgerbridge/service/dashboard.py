"""The operations dashboard under ``/dashboard`` (server-rendered with Jinja2; every asset served from this
package, no CDN; charts are inline SVG drawn on the server).

Login: an API token (``ledgerbridge tokens create``) entered once in the login form opens a session (random id in
an HttpOnly, SameSite=Strict cookie) bound to that token and its scope; each request re-checks that the token is
still valid (revoking it ends its sessions). Sessions live in the process (a restart asks to log in again).
Replay and discard need the ``operate`` scope and carry a per-session CSRF token.

Pages: overview (tiles and charts), trace (has approved time reached billing / have invoices posted, per project),
dead letters (list, one letter with replay / discard), stewardship queue, period close checklist, reconciliation
runs with drill-down to the items behind a variance. See docs/dashboard.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import threading
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ledgerbridge.flows import alerts, dlq, recon_runs
from ledgerbridge.flows.periods import close_checklist
from ledgerbridge.store import dead_letters, stewardship, tokens
from ledgerbridge.store import periods as periods_repo
from ledgerbridge.store.engine import snapshot_connection
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import invoices as inv_t
from ledgerbridge.store.schema import staging_lines as staging_t
from ledgerbridge.store.tokens import SCOPES

HERE = Path(__file__).parent
STATIC = HERE / "static"
COOKIE = "lb_session"
SESSION_SECONDS = 8 * 3600
_RANK = {s: i for i, s in enumerate(SCOPES)}

_env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))


def _money(v: Any) -> str:
    if v is None or v == "":
        return "—"
    d = Decimal(str(v))
    return f"{d:,.2f}"


def _num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    return f"{float(v):,.{digits}f}"


def _hours_text(h: Any) -> str:
    if h is None:
        return "—"
    h = float(h)
    if h < 1:
        return f"{h * 60:.0f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} d"


_env.filters["money"] = _money
_env.filters["num"] = _num
_env.filters["dur"] = _hours_text
_env.filters["pretty"] = lambda v: json.dumps(v, indent=2, default=str, sort_keys=True)
_env.filters["urlq"] = lambda v: quote(str(v), safe="")


@dataclasses.dataclass
class Session:
    token_id: str
    name: str
    scope: str
    csrf: str
    expires: float

    def can(self, scope: str) -> bool:
        return _RANK[self.scope] >= _RANK[scope]


class Sessions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def open(self, tok: tokens.ApiToken) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._by_id = {k: v for k, v in self._by_id.items() if v.expires > now}
            self._by_id[sid] = Session(tok.id, tok.name, tok.scope, secrets.token_urlsafe(24), now + SESSION_SECONDS)
        return sid

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._by_id.get(sid)
            if s is not None and s.expires < time.time():
                self._by_id.pop(sid, None)
                return None
            return s

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def _sessions(request: Request) -> Sessions:
    st = request.app.state
    if getattr(st, "dashboard_sessions", None) is None:
        st.dashboard_sessions = Sessions()
    return st.dashboard_sessions  # type: ignore[no-any-return]


def _ctx(request: Request) -> Any:
    return request.app.state.ctx



def _session(request: Request) -> Session:
    s = _sessions(request).get(request.cookies.get(COOKIE))
    if s is None:
        raise HTTPException(303, "log in first", headers={"Location": "/dashboard/login?next="
                                                          + quote(request.url.path, safe="")})
    with _ctx(request).engine.connect() as conn:
        tok = tokens.get(conn, s.token_id)
    if tok is None or tok.revoked_at is not None:
        _sessions(request).close(request.cookies.get(COOKIE))
        raise HTTPException(303, "token revoked", headers={"Location": "/dashboard/login?revoked=1"})
    return s


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST (parsed with the standard library; no multipart forms here)."""
    raw = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


FORM = Depends(_form)


def _render(request: Request, template: str, s: Session | None, http_status: int = 200, **data: Any) -> HTMLResponse:
    page = _env.get_template(template).render(session=s, path=request.url.path, now=dt.datetime.now(dt.UTC),
                                              **data)
    return HTMLResponse(page, status_code=http_status)


def _require(request: Request, s: Session, scope: str, csrf: str) -> None:
    if not secrets.compare_digest(csrf, s.csrf):
        raise HTTPException(403, "the form is stale (CSRF check failed): reload the page and try again")
    if not s.can(scope):
        raise HTTPException(403, f"token {s.name!r} has scope {s.scope!r}; this action needs {scope!r} or wider — "
                                 "log in with an operate token (`ledgerbridge tokens create --scope operate`)")


# --------------------------------------------------------------------------------------------------- charts


def bar_chart(bars: list[tuple[str, float]], *, title: str, unit: str = "", width: int = 460, height: int = 220,
              colour: str = "#2f6fb0") -> str:
    """An inline SVG bar chart (labels under the bars, value above each)."""
    return grouped_chart([(label, [v]) for label, v in bars], series=[""], colours=[colour], title=title,
                         unit=unit, width=width, height=height)


def grouped_chart(groups: list[tuple[str, list[float]]], *, series: list[str], colours: list[str], title: str,
                  unit: str = "", width: int = 460, height: int = 220) -> str:
    """An inline SVG grouped bar chart with a legend; negative values hang below the zero line."""
    from html import escape

    top, bottom, left, right = 28, 62, 8, 8
    plot_h = height - top - bottom
    values = [v for _, vs in groups for v in vs] or [0.0]
    hi, lo = max(max(values), 0.0), min(min(values), 0.0)
    span = (hi - lo) or 1.0
    zero_y = top + plot_h * hi / span
    n = max(len(groups), 1)
    gw = (width - left - right) / n
    bw = max(min(gw * 0.8 / max(len(series), 1), 48), 2)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             f'<line x1="{left}" y1="{zero_y:.1f}" x2="{width - right}" y2="{zero_y:.1f}" class="axis"/>']
    for gi, (label, vs) in enumerate(groups):
        gx = left + gi * gw + (gw - bw * len(vs)) / 2
        for si, v in enumerate(vs):
            h = plot_h * abs(v) / span
            y = zero_y - h if v >= 0 else zero_y
            x = gx + si * bw
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{max(h, 0.5):.1f}" '
                         f'fill="{colours[si % len(colours)]}"><title>{escape(label)} {escape(series[si])}: '
                         f'{v:,.2f}{escape(unit)}</title></rect>')
            if len(vs) == 1 or n <= 6:
                ty = y - 3 if v >= 0 else y + h + 11
                parts.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{ty:.1f}" class="val">{_short(v)}</text>')
        cx = left + gi * gw + gw / 2
        lines = label.split(" ") if n > 4 else [label]  # crowded: one word a line
        parts.append(f'<text x="{cx:.1f}" y="{height - bottom + 13}" class="lbl">' + "".join(
            f'<tspan x="{cx:.1f}" dy="{0 if i == 0 else 11}">{escape(t)}</tspan>' for i, t in enumerate(lines))
            + "</text>")
    if len(series) > 1 or series[0]:
        lx = left
        for si, name in enumerate(series):
            parts.append(f'<rect x="{lx}" y="{height - 18}" width="10" height="10" '
                         f'fill="{colours[si % len(colours)]}"/><text x="{lx + 14}" y="{height - 9}" '
                         f'class="legend">{escape(name)}</text>')
            lx += 16 + 7 * len(name) + 14
    parts.append("</svg>")
    return "".join(parts)


def _short(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a == int(a):
        return f"{int(v)}"
    return f"{v:.1f}"


# --------------------------------------------------------------------------------------------------- data


def margin_rows(ctx: Any, run_id: str | None) -> list[dict[str, Any]]:
    """Margin (revenue - labour cost - expense) per entity, period and currency: PSA and ledger (ERP) from the
    stored reconciliation cells, mart from the reporting mart's ``project_margin`` (when built)."""
    if run_id is None:
        return []
    with ctx.engine.connect() as conn:
        cells = recon_runs.run_cells(conn, run_id)
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    sign = {"revenue": 1, "labor_cost": -1, "expense": -1}
    for c in cells:
        if c["measure"] not in sign:
            continue
        k = (c["legal_entity_id"], c["period"], c["currency"])
        r = rows.setdefault(k, {"legal_entity_id": k[0], "period": k[1], "currency": k[2], "psa": Decimal(0),
                                "ledger": Decimal(0), "mart": None})
        r["psa"] += sign[c["measure"]] * Decimal(c["psa"])
        if c["ledger"] is not None:
            r["ledger"] += sign[c["measure"]] * Decimal(c["ledger"])
    mart = ctx.workdir / "mart.duckdb"
    if mart.exists() and rows:
        from ledgerbridge.flows.marts import open_mart

        duck = open_mart(mart)
        try:
            for e, p, ccy, margin in duck.execute("SELECT legal_entity_id, period, currency, sum(margin) FROM "
                                                  "project_margin GROUP BY ALL").fetchall():
                if (e, p, ccy) in rows:
                    rows[(e, p, ccy)]["mart"] = Decimal(margin)
        finally:
            duck.close()
    return [rows[k] for k in sorted(rows)]


def project_trace(ctx: Any) -> list[dict[str, Any]]:
    """Per project: approved items (latest approved version of each time entry / expense), how many reached the
    ledger, how many were billed, the invoices and whether they posted in the ERP."""
    i, s = inbox_t.c, staging_t.c
    approved: dict[tuple[str, str], tuple[int, str, Decimal]] = {}
    with snapshot_connection(ctx.engine) as conn:
        for ent, ext, ver, project, status, hours in conn.execute(sa.select(
                i.entity, i.external_id, i.version, i.payload["project_id"].as_string(),
                i.payload["approval_status"].as_string(), i.payload["hours"].as_string()).where(
                i.entity.in_(("time_entry", "expense")), i.status == "processed")):
            key = (ent, ext)
            v = int(ver)
            if status == "approved" and (key not in approved or v > approved[key][0]):
                approved[key] = (v, project or "?", Decimal(hours) if hours else Decimal(0))
        posted = {(e, sid) for e, sid in conn.execute(sa.select(s.source_entity, s.source_id).where(
            s.status == "posted", s.sign == 1).distinct())}
        invoices = conn.execute(sa.select(inv_t.c.id, inv_t.c.project_id, inv_t.c.kind, inv_t.c.status,
                                          inv_t.c.erp_number, inv_t.c.net_total, inv_t.c.currency,
                                          inv_t.c.lineage)).all()
    billed: set[tuple[str, str]] = set()
    by_project: dict[str, list[Any]] = defaultdict(list)
    for inv in invoices:
        by_project[inv.project_id].append(inv)
        if inv.kind == "credit_note":
            continue
        refs = inv.lineage.get("refs", []) if isinstance(inv.lineage, dict) else (inv.lineage or [])
        for ref in refs:
            key = alerts._ref_key(ref)
            if key:
                parts = key.split(":")
                billed.add((parts[1], parts[2]))
    out: dict[str, dict[str, Any]] = {}
    for (ent, ext), (_v, project, hours) in approved.items():
        r = out.setdefault(project, {"project_id": project, "approved": 0, "approved_hours": Decimal(0),
                                     "posted": 0, "billed": 0, "invoices": 0, "invoices_posted": 0,
                                     "invoice_numbers": []})
        r["approved"] += 1
        r["approved_hours"] += hours if ent == "time_entry" else 0
        r["posted"] += (ent, ext) in posted
        r["billed"] += (ent, ext) in billed
    for project, invs in by_project.items():
        r = out.setdefault(project, {"project_id": project, "approved": 0, "approved_hours": Decimal(0),
                                     "posted": 0, "billed": 0, "invoices": 0, "invoices_posted": 0,
                                     "invoice_numbers": []})
        r["invoices"] = len(invs)
        r["invoices_posted"] = sum(1 for x in invs if x.status in ("posted", "paid", "credited"))
        r["invoice_numbers"] = sorted(x.erp_number or x.id for x in invs)[:4]
    has_billing = bool(invoices)
    projects = getattr(getattr(ctx, "reference", None), "projects", {}) or {}
    for pid, r in out.items():
        p = projects.get(pid)
        contract = str(getattr(p, "contract_type", "") or "")
        r["contract"] = contract.replace("_", " ") or "?"
        r["unposted"] = r["approved"] - r["posted"]
        # only time-and-materials projects bill time itself; fixed-fee and milestone projects bill their schedule
        r["unbilled"] = (r["approved"] - r["billed"]) if has_billing and contract in ("time_and_materials", "") \
            else None
        r["invoices_unposted"] = r["invoices"] - r["invoices_posted"]
    return [out[k] for k in sorted(out)]


# --------------------------------------------------------------------------------------------------- routes


def make_router() -> APIRouter:
    r = APIRouter(prefix="/dashboard", include_in_schema=False)

    @r.get("/static/{name}")
    def static(name: str) -> Response:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, f"no dashboard asset {name!r}")
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    @r.get("/login")
    def login_form(request: Request, next: str = "/dashboard/", revoked: int = 0, error: str = "") -> Response:
        return _render(request, "login.html", None, next=_safe_next(next), error=error or (
            "That token was revoked; log in with a valid one." if revoked else ""))

    @r.post("/login")
    def login(request: Request, form: dict[str, str] = FORM) -> Response:
        token, next = form.get("token", ""), form.get("next", "/dashboard/")
        with _ctx(request).engine.connect() as conn:
            tok = tokens.verify(conn, token.strip()) if token.strip() else None
        if tok is None:
            return _render(request, "login.html", None, http_status=401, next=_safe_next(next),
                           error="Unknown, revoked or mistyped token. Create one with "
                                 "`ledgerbridge tokens create --scope read --name YOU`.")
        sid = _sessions(request).open(tok)
        resp = RedirectResponse(_safe_next(next), status_code=303)
        resp.set_cookie(COOKIE, sid, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/dashboard")
        return resp

    @r.post("/logout")
    def logout(request: Request) -> Response:
        _sessions(request).close(request.cookies.get(COOKIE))
        resp = RedirectResponse("/dashboard/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/dashboard")
        return resp

    @r.get("/")
    def overview(request: Request) -> Response:
        s = _session(request)
        ctx = _ctx(request)
        m = alerts.compute_metrics(ctx)
        v = m.values()
        with ctx.engine.connect() as conn:
            trend = recon_runs.variance_trend(conn)
        lag = bar_chart([(label, float(n)) for label, n in m.lag_histogram()],
                        title="Posting lag: approved to posted (source versions)")
        queues = sorted(m.aging)
        aging = grouped_chart([(label, [float(dict(m.aging[q])[label]) for q in queues])
                               for label, _ in alerts.AGE_BUCKETS], series=queues,
                              colours=["#d08c1a", "#b03a2e"], title="Open dead letters by age")
        variance = grouped_chart([(f"{t['legal_entity_id']} {t['period']}", [float(t["explained"]),
                                                                            float(t["unexplained"])])
                                  for t in trend], series=["explained", "unexplained"],
                                 colours=["#6b8fb3", "#b03a2e"], title="Reconciliation variance by period")
        margins = margin_rows(ctx, m.recon["run_id"] if m.recon else None)
        margin = grouped_chart([(f"{x['legal_entity_id']} {x['period']} {x['currency']}",
                                 [float(x["psa"]), float(x["ledger"])]
                                 + ([float(x["mart"])] if x["mart"] is not None else []))
                                for x in margins], series=["PSA", "ERP ledger", "mart"],
                               colours=["#4c9a6a", "#2f6fb0", "#8e6bb3"], title="Margin: PSA vs ERP ledger vs mart")
        rules = [{"rule": rule, "value": v[rule.metric], "runbook": alerts.runbook_for(rule, ctx.config.alerts),
                  "breach": v[rule.metric] is not None and alerts._OPS[rule.op](Decimal(str(v[rule.metric])),
                                                                                rule.threshold)}
                 for rule in ctx.config.alerts.rules if rule.metric in alerts.METRICS]
        return _render(request, "overview.html", s, m=m, v=v, charts={"lag": lag, "aging": aging,
                                                                      "variance": variance, "margin": margin},
                       margins=margins, rules=rules, lag_by_entity=alerts.lag_by_entity(m))

    @r.get("/trace")
    def trace(request: Request) -> Response:
        s = _session(request)
        return _render(request, "trace.html", s, rows=project_trace(_ctx(request)))

    @r.get("/dead-letters")
    def letters(request: Request, queue: str = "", status: str = "open") -> Response:
        s = _session(request)
        if queue not in ("", "operational", "financial") or status not in ("open", "replayed", "discarded", "all"):
            raise HTTPException(400, "queue is operational or financial; status open, replayed, discarded or all")
        with _ctx(request).engine.connect() as conn:
            rows = dead_letters.list_letters(conn, queue=queue or None, status=None if status == "all" else status,
                                             limit=500)
        counts = dlq.counts(_ctx(request))
        return _render(request, "dead_letters.html", s, rows=rows, queue=queue, status=status, counts=counts,
                       open_total=sum(counts.values()))

    @r.get("/dead-letters/{letter_id}")
    def letter(request: Request, letter_id: str, done: str = "") -> Response:
        s = _session(request)
        with _ctx(request).engine.connect() as conn:
            got = dead_letters.get(conn, letter_id)
        if got is None:
            raise HTTPException(404, f"no dead letter {letter_id!r}")
        return _render(request, "dead_letter.html", s, d=got, done=done,
                       open_total=sum(dlq.counts(_ctx(request)).values()))

    @r.post("/dead-letters/{letter_id}/replay")
    def replay(request: Request, letter_id: str, form: dict[str, str] = FORM) -> Response:
        s = _session(request)
        csrf = form.get("csrf", "")
        _require(request, s, "operate", csrf)
        ctx = _ctx(request)
        with ctx.engine.connect() as conn:
            got = dead_letters.get(conn, letter_id)
        if got is None:
            raise HTTPException(404, f"no dead letter {letter_id!r}")
        res = dlq.replay(ctx, [got], actor=f"token:{s.name}#{s.token_id} (dashboard)")
        d = res.details[0] if res.details else {"outcome": "?", "note": ""}
        return RedirectResponse(f"/dashboard/dead-letters/{quote(letter_id)}?done="
                                + quote(f"replay {d['outcome']}: {d['note']}"), status_code=303)

    @r.post("/dead-letters/{letter_id}/discard")
    def discard(request: Request, letter_id: str, form: dict[str, str] = FORM) -> Response:
        s = _session(request)
        csrf, reason = form.get("csrf", ""), form.get("reason", "")
        _require(request, s, "operate", csrf)
        if not reason.strip():
            raise HTTPException(400, "discarding needs a reason (it is kept in the audit log): go back and enter one")
        ctx = _ctx(request)
        with ctx.engine.connect() as conn:
            got = dead_letters.get(conn, letter_id)
        if got is None:
            raise HTTPException(404, f"no dead letter {letter_id!r}")
        n = dlq.discard(ctx, [got], reason.strip(), actor=f"token:{s.name}#{s.token_id} (dashboard)")
        return RedirectResponse(f"/dashboard/dead-letters/{quote(letter_id)}?done="
                                + quote("discarded" if n else "already closed"), status_code=303)

    @r.get("/stewardship")
    def steward(request: Request) -> Response:
        s = _session(request)
        with _ctx(request).engine.connect() as conn:
            rows = stewardship.list_items(conn, status="open", limit=500)
        return _render(request, "stewardship.html", s, rows=rows)

    @r.get("/periods")
    def periods(request: Request) -> Response:
        s = _session(request)
        ctx = _ctx(request)
        with ctx.engine.connect() as conn:
            rows = periods_repo.list_periods(conn)
        items = []
        for p in sorted(rows, key=lambda p: (p.legal_entity_id, p.period)):
            problems = close_checklist(ctx, p.legal_entity_id, p.period) if p.status in ("open", "closing") else []
            items.append({"p": p, "problems": problems, "ready": not problems})
        return _render(request, "periods.html", s, items=items)

    @r.get("/reconciliation")
    def recon_index(request: Request) -> Response:
        s = _session(request)
        with _ctx(request).engine.connect() as conn:
            runs = recon_runs.list_runs(conn, limit=30)
            trend = recon_runs.variance_trend(conn)
        return _render(request, "recon_runs.html", s, runs=runs, trend=trend)

    @r.get("/reconciliation/{run_id}")
    def recon_run(request: Request, run_id: str) -> Response:
        s = _session(request)
        with _ctx(request).engine.connect() as conn:
            run = recon_runs.get_run(conn, run_id)
            if run is None:
                raise HTTPException(404, f"no reconciliation run {run_id!r}")
            cells = recon_runs.run_cells(conn, run_id)
        return _render(request, "recon_run.html", s, run=run, cells=cells)

    @r.get("/reconciliation/{run_id}/{entity}/{period}/{measure}/{currency}")
    def recon_cell(request: Request, run_id: str, entity: str, period: str, measure: str,
                   currency: str) -> Response:
        s = _session(request)
        ccy = "" if currency == "h" else currency
        with _ctx(request).engine.connect() as conn:
            run = recon_runs.get_run(conn, run_id)
            cells = recon_runs.run_cells(conn, run_id) if run else []
        cell = next((c for c in cells if (c["legal_entity_id"], c["period"], c["measure"], c["currency"])
                     == (entity, period, measure, ccy)), None)
        if run is None or cell is None:
            raise HTTPException(404, f"no cell {entity} {period} {measure} {currency} in run {run_id}")
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in cell["explanations"]:
            groups[e["kind"]].append(e)
        summary = [{"kind": k, "n_items": len({e["item_id"] for e in es}),
                    "amount": sum((Decimal(e["amount"]) for e in es), Decimal(0)), "rows": es}
                   for k, es in sorted(groups.items())]
        return _render(request, "recon_cell.html", s, run=run, cell=cell, groups=summary)

    return r


def _safe_next(target: str) -> str:
    return target if target.startswith("/dashboard/") and "//" not in target else "/dashboard/"
