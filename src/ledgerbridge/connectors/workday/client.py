"""Workday HTTP: SOAP Web Services with WS-Security, Response_Filter paging, SOAP faults, and RaaS JSON reports.

Every call goes through :func:`ledgerbridge.connectors.http.send` (pacing, metrics, bounded retries). SOAP 1.1
answers a fault with HTTP 500, which the shared classifier would take for a server error and retry; the adapter
:class:`_SoapFaults` reads the envelope first: a client-side fault (validation, processing, authentication) is
raised at once as its own error kind (:func:`mapping.fault_error`), only a ``Server`` fault stays a retried 500.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from lxml import etree

from ledgerbridge.connectors.http import Pacer, send
from ledgerbridge.connectors.workday.mapping import (
    MAX_PAGE_COUNT,
    envelope,
    fault_error,
    page_info,
)
from ledgerbridge.errors import PermanentError, TransientError

SYSTEM = "workday"
DEFAULT_VERSION = "v43.0"
SERVICES = ("Financial_Management", "Resource_Management", "Revenue_Management")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def parse_xml(content: bytes, system: str = SYSTEM) -> etree._Element:
    try:
        return etree.fromstring(content, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise TransientError(f"{system}: the SOAP answer is not XML ({exc})", code="LB-T001") from exc


class _SoapFaults:
    """An ``httpx.Client`` stand-in for :func:`send`: passes answers through, but raises the classified error of
    a SOAP fault that is not a server fault (so a validation fault is not retried as a 500)."""

    def __init__(self, http: httpx.Client, system: str) -> None:
        self.http = http
        self.system = system

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        from ledgerbridge.service.metrics import record_api_call

        response = self.http.request(method, url, **kwargs)
        if b"Fault" in response.content[:4096] and "xml" in response.headers.get("content-type", ""):
            err = fault_error(parse_xml(response.content, self.system), self.system, response.status_code)
            if err is not None and err.code != "LB-T004":
                record_api_call(self.system, response.status_code)
                raise err
        return response


class WorkdayClient:
    """One Workday tenant: ``base_url`` is the services host (``https://wd2-impl-services1.workday.com``),
    ``username`` the ISU without the tenant (``ISU_ledgerbridge``; sent as ``ISU_ledgerbridge@<tenant>``).

    ``concurrency`` caps parallel calls (Workday publishes no rate limit; keep it low); ``requests_per_second``
    optionally paces below what the tenant's resource management tolerates.
    """

    def __init__(self, base_url: str, tenant: str, username: str, password: str, *,
                 version: str = DEFAULT_VERSION, timeout: float = 120.0, concurrency: int = 2,
                 requests_per_second: float | None = None, system: str = SYSTEM,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant = tenant
        self.username = username if "@" in username else f"{username}@{tenant}"
        self._password = password
        self.version = version if version.startswith("v") else f"v{version}"
        self.system = system
        self.http = httpx.Client(timeout=timeout, transport=transport)
        self._soap = _SoapFaults(self.http, system)
        limit = int(requests_per_second) if requests_per_second else None
        self.pacer = Pacer(limit, 1.0, concurrency=concurrency)
        self.calls = 0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> WorkdayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def service_url(self, service: str) -> str:
        return f"{self.base_url}/ccx/service/{quote(self.tenant)}/{service}/{self.version}"

    def call(self, service: str, body: etree._Element) -> etree._Element:
        """Send one operation (``body`` = the ``wd:<Operation>_Request`` element); return the ``..._Response``
        element. Faults raise their classified error."""
        payload = envelope(body, username=self.username, password=self._password)
        self.calls += 1
        response = send(self._soap, "POST", self.service_url(service), system=self.system, pacer=self.pacer,
                        content=payload, headers={"Content-Type": "text/xml; charset=utf-8",
                                                  "SOAPAction": etree.QName(body).localname})
        root = parse_xml(response.content, self.system)
        err = fault_error(root, self.system, response.status_code)
        if err is not None:
            raise err
        found = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
        if found is None or len(found) == 0:
            raise PermanentError(f"{self.system}: SOAP answer without a body element", code="LB-P006")
        return found[0]

    def pages(self, service: str, build: Callable[[int, int], etree._Element], *, count: int = 100
              ) -> Iterator[etree._Element]:
        """Yield every page's response of a ``Get_*`` operation: ``build(page, count)`` makes the request;
        pages follow ``Response_Results/Total_Pages`` (1-based)."""
        if not 1 <= count <= MAX_PAGE_COUNT:
            raise ValueError(f"Workday Response_Filter Count must be 1..{MAX_PAGE_COUNT}, got {count}")
        page = 1
        while True:
            response = self.call(service, build(page, count))
            yield response
            info = page_info(response)
            if page >= info.total_pages:
                return
            page += 1

    def report(self, owner: str, name: str, **prompts: str) -> list[dict[str, Any]]:
        """Rows of a RaaS custom report (``Report_Entry``), JSON, numbers as ``Decimal``. RaaS JSON is not paged:
        keep reports narrow with prompts (company, period)."""
        url = f"{self.base_url}/ccx/service/customreport2/{quote(self.tenant)}/{quote(owner)}/{quote(name)}"
        self.calls += 1
        response = send(self.http, "GET", url, system=self.system, pacer=self.pacer,
                        params={"format": "json", **prompts}, auth=(self.username, self._password))
        try:
            body = json.loads(response.content, parse_float=Decimal)
        except ValueError as exc:
            raise PermanentError(f"{self.system}: report {owner}/{name} did not answer JSON — is it enabled as a "
                                 "web service?", code="LB-P006") from exc
        rows = body.get("Report_Entry") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise PermanentError(f"{self.system}: report {owner}/{name} answer has no Report_Entry list",
                                 code="LB-P006")
        return rows


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
