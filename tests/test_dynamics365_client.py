"""The Dynamics 365 client and connector against the sandbox, protocol by protocol: the cross-company trap (a read
without the flag silently misses legal entities, and the connector never omits it), OData paging, $batch changesets
all-or-nothing (unbalanced and closed-period journals refused with F&O's error text, nothing half-written), token
expiry mid-run (one 401, one new token, nothing posted twice) and proactive renewal, and rate limits held without
storms (achieved rate vs the limit and the 429 share printed)."""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dynamics365_support import CLIENT_ID, SECRET, TENANT, connector_options, serve
from ledgerbridge.connectors.base import PostingBatch, PostStatus
from ledgerbridge.connectors.dynamics365 import D365Client, D365Connector, D365Mapping, Op
from ledgerbridge.errors import ConflictError, PermanentError
from ledgerbridge.model.entities import Customer, JournalEntry, JournalLine, JournalType


def connector(base: str, **over: Any) -> D365Connector:
    return D365Connector.from_options("erp_d365", connector_options(base, **over), client_secret=SECRET)


def journal(jid: str, day: dt.date, amount: str, entity: str = "US01", currency: str = "USD") -> JournalEntry:
    lines = (JournalLine(line_no=1, account="5000", debit=Decimal(amount), currency=currency,
                         dimensions={"cost_center": "CC-DEL-US", "project": "PRJ-00001"}),
             JournalLine(line_no=2, account="2100", credit=Decimal(amount), currency=currency))
    return JournalEntry(id=jid, legal_entity_id=entity, period=day.strftime("%Y-%m"), entry_date=day,
                        journal_type=JournalType.LABOR_COST, description=f"labor {jid}", lines=lines)


def batch(run: str, journals: list[JournalEntry]) -> PostingBatch:
    return PostingBatch(run, journals[0].legal_entity_id, journals[0].period, journals)


def raw_get(base: str, path: str) -> list[dict[str, Any]]:
    tok = httpx.post(f"{base}/{TENANT}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET,
        "scope": f"{base}/.default"}).json()["access_token"]
    return httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {tok}"}).json()["value"]


def test_cross_company_trap_and_the_connector_never_omits_the_flag() -> None:
    with serve(page_size=3) as (app, base):
        store = app.state.store
        conn = connector(base)
        custs = [Customer(id=f"C-{e}-{i}", name=f"Customer {e} {i}", legal_entity_id=e, currency=cur,
                          tax_jurisdiction=e[:2], tax_code="X") for e, cur in (("US01", "USD"), ("UK01", "GBP"),
                                                                               ("DE01", "EUR")) for i in range(4)]
        conn.push_customers(custs)
        # the trap, reproduced: without cross-company=true only the default company (usmf) answers, silently
        plain = raw_get(base, "/data/CustomersV3")
        assert {r["dataAreaId"] for r in plain} == {"usmf"} and len(plain) == 3  # first page of 4 usmf rows
        assert len(store.reads_without_cross_company) == 1
        store.reads_without_cross_company.clear()
        # the connector reads every company (paged through nextLink, page size 3)
        rows = conn.client.fo_get("CustomersV3")
        assert {(r["dataAreaId"], r["CustomerAccount"]) for r in rows} == {
            ({"US01": "usmf", "UK01": "gbsi", "DE01": "demf"}[c.legal_entity_id], c.id) for c in custs}
        assert app.state.calls.count(method="GET", path_prefix="/data/CustomersV3") >= 1 + 12 // 3
        # a UK01 journal, its period and its read-back: every read found gbsi data, none went without the flag
        res = conn.post_journals(batch("r-uk", [journal("UK-1", dt.date(2026, 9, 3), "10.00", "UK01", "GBP")]))
        assert res[0].status is PostStatus.POSTED
        assert conn.period_status("UK01", "2026-09") == "open"
        assert conn.read_back(["UK-1"])["UK-1"].line_count == 2
        assert conn.account_totals("UK01")
        assert store.reads_without_cross_company == []
        # F&O has no `in` operator: the sandbox refuses it as F&O does, the connector writes or-chains
        tok = conn.client.token(base)
        bad = httpx.get(f"{base}/data/CustomersV3", params={"cross-company": "true",
                                                            "$filter": "CustomerAccount in ('a','b')"},
                        headers={"Authorization": f"Bearer {tok}"})
        assert bad.status_code == 400 and "'in' operator is not supported" in bad.text


def test_changesets_are_all_or_nothing_with_the_odata_error_text() -> None:
    with serve() as (app, base):
        store = app.state.store
        client = connector(base).client

        def journal_ops(amounts: tuple[str, str], day: str = "2026-09-10") -> list[Op]:
            lines = [{"dataAreaId": "usmf", "AccountDisplayValue": acct, "TransDate": f"{day}T12:00:00Z",
                      "CurrencyCode": "USD", "DebitAmount": Decimal(d), "CreditAmount": Decimal(c)}
                     for acct, d, c in (("5000", amounts[0], "0"), ("2100", "0", amounts[1]))]
            return [Op("POST", "LedgerJournalHeaders", {"dataAreaId": "usmf", "Description": f"t-{amounts}-{day}"}),
                    *(Op("POST", "$1/JournalLines", ln) for ln in lines),
                    Op("POST", "$1/Microsoft.Dynamics.DataEntities.Post", {})]

        store.set_period("usmf", "2026-08", "OnHold")
        good, unbalanced, closed = client.fo_batch([journal_ops(("5.00", "5.00")), journal_ops(("5.00", "4.99")),
                                                    journal_ops(("1.00", "1.00"), "2026-08-20")])
        assert good.ok and [s for s, _ in good.answers] == [201, 201, 201, 204]
        assert not unbalanced.ok and "do not balance" in unbalanced.error_text
        assert unbalanced.answers[0][1]["error"]["innererror"]["type"].endswith("AxODataWriteException")
        assert not closed.ok and "OnHold" in closed.error_text
        # only the good changeset left anything behind: one header, its two lines, posted
        assert [h["IsPosted"] for h in store.journals()] == ["Yes"]
        assert len(store.rows("LedgerJournalLines")) == 2 and len(store.rows("GeneralJournalAccountEntries")) == 2


def test_token_expiry_mid_run_renews_once_and_posts_nothing_twice() -> None:
    with serve() as (app, base):
        conn = connector(base, batch_journals=1)
        now = [1000.0]
        app.state.clock[0] = lambda: now[0]

        def expire_after_second_batch(method: str, path: str) -> None:
            if path == "/data/$batch" and app.state.batches_done[0] == 2:
                now[0] += 7200  # every token issued so far is now past its lifetime

        app.state.after_request.append(expire_after_second_batch)
        journals = [journal(f"TOK-{i}", dt.date(2026, 9, 2 + i), f"{100 + i}.25") for i in range(5)]
        res = conn.post_journals(batch("r-tok", journals))
        assert [r.status for r in res] == [PostStatus.POSTED] * 5
        assert conn.client.tokens_fetched == 2
        assert app.state.calls.count(status=401) == 1
        assert len(app.state.store.journals()) == 5
        assert all(rb.matches(j) for j in journals for rb in [conn.read_back([j.id])[j.id]])


def test_token_is_renewed_before_it_expires() -> None:
    with serve(token_lifetime=600) as (app, base):
        now = [0.0]
        client = D365Client(fo_url=base, tenant_id=TENANT, client_id=CLIENT_ID, client_secret=SECRET,
                            authority=base, refresh_skew=60, clock=lambda: now[0])
        first = client.token(base)
        now[0] = 500.0
        assert client.token(base) == first  # still 100 s left
        now[0] = 545.0
        assert client.token(base) != first  # within the 60 s skew: renewed before any 401
        assert app.state.calls.count(status=401) == 0 and client.tokens_fetched == 2
        with pytest.raises(PermanentError, match="Invalid client secret"):
            D365Client(fo_url=base, tenant_id=TENANT, client_id=CLIENT_ID, client_secret="wrong",
                       authority=base).token(base)


def hammer(app: Any, conn: D365Connector, entity: str, calls: int, label: str, allowed: float) -> dict[str, Any]:
    """``calls`` period reads from 4 threads; the sandbox's accepted/refused counts for them (printed)."""
    conn.period_status(entity, "2026-09")  # the token, outside the count
    app.state.limits.accepted = app.state.limits.refused = 0
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: conn.period_status(entity, "2026-09"), range(calls)))
    took = time.monotonic() - start
    stats = {**app.state.limits.stats(), "rate": calls / took, "pauses": conn.client.pacer.pauses}
    print(f"{label}: {stats['rate']:.1f} req/s against {allowed:.0f} allowed, 429 share "
          f"{stats['refused_share']:.3f}, pauses {stats['pauses']}")
    return stats


def test_rate_limits_held_without_storms() -> None:
    limit, window = 20, 0.5
    with serve(rate_limit=limit, rate_window=window) as (app, base):
        paced = hammer(app, connector(base, rate_limit=limit, rate_window=window), "US01", 40, "paced",
                       limit / window)
        assert paced["refused"] == 0 and paced["rate"] <= limit / window
        # a connector that does not know the limit learns it from 429 + Retry-After
        blind = hammer(app, connector(base, rate_limit=100000, rate_window=1), "UK01", 24, "blind", limit / window)
        # no storm: one 429 pauses every thread for Retry-After, so at most the requests already in flight
        # (4 threads) are refused per pause, and each refused call went through once retried
        assert 0 < blind["refused"] <= 4 * blind["pauses"] and blind["accepted"] == 24


def test_duplicate_headers_are_a_conflict_never_a_third_copy() -> None:
    with serve() as (app, base):
        conn = connector(base)
        j = journal("DUP-1", dt.date(2026, 9, 9), "12.34")
        assert conn.post_journals(batch("r1", [j]))[0].status is PostStatus.POSTED
        # someone copies the journal by hand in F&O: two headers now carry our reference
        store = app.state.store
        (h,) = store.journals()
        store.add("LedgerJournalHeaders", {**h, "JournalBatchNumber": "USMF-HAND01"})
        (res,) = conn.post_journals(batch("r2", [j]))
        assert res.status is PostStatus.REJECTED and isinstance(res.error, ConflictError)
        assert len(store.journals()) == 2
        other = j.model_copy(update={"id": "DUP-2"})
        conn.post_journals(batch("r3", [other]))
        changed = other.model_copy(update={"lines": (other.lines[0].model_copy(update={"debit": Decimal("1")}),
                                                     other.lines[1].model_copy(update={"credit": Decimal("1")}))})
        (res2,) = conn.post_journals(batch("r4", [changed]))
        assert isinstance(res2.error, ConflictError) and "different lines" in res2.error.message


class DroppingTransport(httpx.HTTPTransport):
    """Real HTTP, but every nextLink F&O returns loses its ``cross-company=true`` (a proxy or an F&O version that
    does not carry it over); records every URL sent."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[httpx.URL] = []
        self.stripped = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        resp = super().handle_request(request)
        if request.method != "GET" or not request.url.path.startswith("/data/"):
            return resp
        body = resp.read()
        if b"@odata.nextLink" not in body:
            return resp
        self.stripped += 1
        body = body.replace(b"cross-company=true&", b"").replace(b"&cross-company=true", b"")
        headers = [(k, v) for k, v in resp.headers.items() if k.lower() != "content-length"]
        return httpx.Response(resp.status_code, headers=headers, content=body, request=request)


def test_nextlinks_without_the_flag_get_it_back() -> None:
    with serve(page_size=2) as (app, base):
        transport = DroppingTransport()
        client = D365Client(fo_url=base, tenant_id=TENANT, client_id=CLIENT_ID, client_secret=SECRET,
                            authority=base, transport=transport)
        conn = D365Connector(client, D365Mapping(companies={"US01": "usmf", "UK01": "gbsi", "DE01": "demf"}))
        custs = [Customer(id=f"K-{e}-{i}", name=f"K {e} {i}", legal_entity_id=e, currency="USD",
                          tax_jurisdiction="US", tax_code="X") for e in ("US01", "UK01", "DE01") for i in range(3)]
        conn.push_customers(custs)
        rows = client.fo_get("CustomersV3")
        assert len(rows) == 9 and transport.stripped >= 4
        gets = [u for u in transport.urls if u.path.startswith("/data/") and u.path != "/data/$batch"]
        assert gets and all(u.params.get("cross-company") == "true" for u in gets)
        assert app.state.store.reads_without_cross_company == []


def test_format_drift_is_refused_per_journal() -> None:
    """Our options name a dimension F&O's integration format does not have (schema drift): F&O refuses that
    journal's changeset with the infolog text; the journal beside it is posted."""
    with serve() as (app, base):
        conn = connector(base, dimensions=["cost_center", "project", "department"])
        ok = journal("DRIFT-OK", dt.date(2026, 9, 4), "3.00")
        drift = journal("DRIFT-BAD", dt.date(2026, 9, 4), "4.00")
        drift = drift.model_copy(update={"lines": (drift.lines[0].model_copy(update={"dimensions": {
            "cost_center": "CC-DEL-US", "project": "PRJ-00001", "department": "D-100"}}), drift.lines[1])})
        good, bad = conn.post_journals(batch("r-drift", [ok, drift]))
        assert good.status is PostStatus.POSTED and bad.status is PostStatus.REJECTED
        assert "does not match the account structure" in bad.error.message  # type: ignore[union-attr]
        assert [h["Description"] for h in app.state.store.journals()] == ["lb:DRIFT-OK"]


def certificate() -> tuple[str, str, str]:
    """A self-signed certificate: (private key PEM, SHA-1 thumbprint hex, x5t) as Entra shows and uses them."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ledgerbridge-d365")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    sha1 = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, sha1.hex().upper(), base64.urlsafe_b64encode(sha1).decode().rstrip("=")


def test_certificate_credentials() -> None:
    pem, thumbprint, x5t = certificate()
    with serve() as (app, base):
        from cryptography.hazmat.primitives import serialization

        public = serialization.load_pem_private_key(pem.encode(), None).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        app.state.store.certificates[x5t] = public  # uploaded under Certificates & secrets
        opts = connector_options(base, certificate_thumbprint=thumbprint)
        conn = D365Connector.from_options("erp_d365", opts, certificate_key=pem)
        (res,) = conn.post_journals(batch("r-cert", [journal("CERT-1", dt.date(2026, 9, 5), "9.99")]))
        assert res.status is PostStatus.POSTED and conn.client.tokens_fetched == 1
        unknown = D365Connector.from_options("erp_d365", {**opts, "certificate_thumbprint": "AB" * 20},
                                             certificate_key=pem)  # a certificate never uploaded
        with pytest.raises(PermanentError, match="AADSTS700027"):
            unknown.period_status("US01", "2026-09")
        form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": f"{base}/.default",
                **conn.client._credential()}
        head, claims, sig = form["client_assertion"].split(".")
        form["client_assertion"] = f"{head}.{claims}.{sig[:-6]}AAAAAA"  # signature of something else
        refused = httpx.post(f"{base}/{TENANT}/oauth2/v2.0/token", data=form)
        assert refused.status_code == 401 and "AADSTS700027" in refused.text
        with pytest.raises(PermanentError, match="certificate_thumbprint"):
            D365Connector.from_options("erp_d365", connector_options(base), certificate_key=pem)
