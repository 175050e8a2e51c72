"""Power BI sandbox: Entra client-credentials tokens and the push-dataset REST calls, with Microsoft's published
limits (docs/connectors/powerbi.md).

- ``POST /<tenant>/oauth2/v2.0/token`` (``grant_type=client_credentials``, the app's id and secret, scope
  ``https://analysis.windows.net/powerbi/api/.default``) -> a bearer token living ``token_lifetime`` seconds.
- ``GET /v1.0/myorg/groups`` (the workspaces the app is a member of; ``$filter=id eq '<id>'``). Under
  ``/v1.0/myorg/groups/<workspace>/``: ``GET datasets``, ``POST datasets?defaultRetentionPolicy=``
  (``defaultMode`` must be ``Push``; like Power BI, a second dataset with the same name is created, not refused),
  ``GET datasets/<id>/tables``, ``PUT datasets/<id>/tables/<name>``, ``POST .../tables/<name>/rows``,
  ``DELETE .../tables/<name>/rows`` (all rows). The principal must be a member of the workspace.
- Limits: at most ``max_rows_per_post`` (10,000) rows per POST (400 otherwise); ``post_limit`` POST rows requests
  per ``post_window`` seconds per dataset (120 per 60 s) -> 429 with ``Retry-After``; ``basicFIFO`` keeps the newest
  200,000 rows per table, ``None`` refuses beyond 5,000,000. Every pushed row is checked against its table: known
  columns only, values of the column's type (Int64, Double, Decimal, Boolean, DateTime, String <= 4,000 chars).
- Errors: ``{"error": {"code", "message"}}``.

:class:`SwaggerContract` checks requests and responses against Microsoft's Swagger 2.0 document of the REST API
(path + method matched against its ``paths``; bodies validated with ``jsonschema`` against the operation's schemas,
``$ref`` resolved inside the document). Tests attach it to a client's ``httpx`` event hooks.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ledgerbridge.testing.sandbox import CallLog, RateWindow

DESCRIPTION = "Power BI push datasets (Entra token, datasets/tables/rows, 10k rows/POST, 120 POST/min, schema check)"
SCOPE = "https://analysis.windows.net/powerbi/api/.default"
RETENTION_CAP = {"basicFIFO": 200_000, "None": 5_000_000}
TYPES = {"int64", "double", "decimal", "boolean", "bool", "datetime", "string"}


@dataclass
class Store:
    """Test hooks: ``groups`` (workspace id -> member app ids), ``datasets`` (id -> dataset with ``tables``:
    name -> {"columns": [...], "rows": [...]}), ``tokens`` (token -> (app id, expiry))."""

    groups: dict[str, set[str]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    clock: Any = time.monotonic
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rows(self, dataset_id: str, table: str) -> list[dict[str, Any]]:
        return self.datasets[dataset_id]["tables"][table]["rows"]

    def by_name(self, group: str, name: str) -> list[dict[str, Any]]:
        return [d for d in self.datasets.values() if d["group"] == group and d["name"] == name]


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _check_value(col: Mapping[str, Any], value: Any) -> str | None:
    kind = str(col.get("dataType", "")).lower()
    if value is None:
        return None
    ok = {
        "int64": isinstance(value, int) and not isinstance(value, bool),
        "double": isinstance(value, int | float | Decimal) and not isinstance(value, bool),
        "decimal": isinstance(value, int | float | Decimal) and not isinstance(value, bool),
        "boolean": isinstance(value, bool), "bool": isinstance(value, bool),
        "string": isinstance(value, str) and len(value) <= 4000,
    }.get(kind)
    if kind == "datetime":
        try:
            dt.datetime.fromisoformat(str(value)) if isinstance(value, str) else None
            ok = isinstance(value, str)
        except ValueError:
            ok = False
    return None if ok else f"value {value!r} is not a valid {col.get('dataType')} for column {col.get('name')}"


def create_app(*, tenant: str = "lb-tenant", client_id: str = "lb-app", client_secret: str = "lb-secret",
               group_id: str = "f089354e-8366-4e18-aea3-4cb4a3a50b48", token_lifetime: float = 3599.0,
               post_limit: int = 120, post_window: float = 60.0, max_rows_per_post: int = 10_000,
               **_: Any) -> FastAPI:
    store = Store(groups={group_id: {client_id}})
    app = FastAPI(title="Power BI sandbox")
    app.state.store = store
    app.state.calls = CallLog()
    app.state.limits = {}  # dataset id -> RateWindow of POST rows
    app.state.banner = (f"Power BI sandbox: tenant {tenant!r}, app {client_id!r} / secret {client_secret!r}, "
                        f"workspace {group_id}; token URL /{tenant}/oauth2/v2.0/token, API /v1.0/myorg/...")

    def window(dataset_id: str) -> RateWindow:
        with store.lock:
            return app.state.limits.setdefault(dataset_id, RateWindow(limit=post_limit, window=post_window,
                                                                      clock=store.clock))

    @app.post("/{tenant_name}/oauth2/v2.0/token")
    async def token(tenant_name: str, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        path = f"/{tenant_name}/oauth2/v2.0/token"
        if tenant_name != tenant or form.get("grant_type") != "client_credentials":
            app.state.calls.add("POST", path, 400)
            return JSONResponse({"error": "invalid_request", "error_description": "unknown tenant or grant"}, 400)
        if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
            app.state.calls.add("POST", path, 401)
            return JSONResponse({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client "
                                 "secret provided."}, 401)
        if form.get("scope") != SCOPE:
            app.state.calls.add("POST", path, 400)
            return JSONResponse({"error": "invalid_scope", "error_description": f"scope must be {SCOPE}"}, 400)
        tok = uuid.uuid4().hex
        store.tokens[tok] = (client_id, store.clock() + token_lifetime)
        app.state.calls.add("POST", path, 200)
        return JSONResponse({"token_type": "Bearer", "expires_in": int(token_lifetime), "access_token": tok})

    def principal(request: Request, group: str) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        held = store.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if held is None or held[1] <= store.clock():
            return error(401, "TokenExpired" if held else "PowerBINotAuthorizedException",
                         "Access token has expired or is invalid")
        if group not in store.groups:
            return error(404, "ItemNotFound", f"Workspace {group} not found")
        if held[0] not in store.groups[group]:
            return error(401, "PowerBINotAuthorizedException", "The service principal is not a workspace member")
        return None

    def dataset_of(group: str, dataset_id: str) -> dict[str, Any] | None:
        d = store.datasets.get(dataset_id)
        return d if d is not None and d["group"] == group else None

    def table_of(request: Request, group: str, dataset_id: str, table: str
                 ) -> tuple[dict[str, Any], Response | None]:
        if (denied := principal(request, group)) is not None:
            return {}, logged(request, denied)
        d = dataset_of(group, dataset_id)
        if d is None or table not in d["tables"]:
            return {}, logged(request, error(404, "ItemNotFound", f"Table {table} not found"))
        return d, None

    async def body_json(request: Request) -> Any:
        raw = await request.body()
        return json.loads(raw, parse_float=Decimal) if raw else None

    def logged(request: Request, response: Response) -> Response:
        app.state.calls.add(request.method, request.url.path, response.status_code)
        return response

    @app.get("/v1.0/myorg/groups")
    async def get_groups(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        held = store.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if held is None or held[1] <= store.clock():
            return logged(request, error(401, "PowerBINotAuthorizedException", "Access token is invalid"))
        value = [{"id": g, "name": f"workspace {g[:8]}", "isReadOnly": False, "isOnDedicatedCapacity": False}
                 for g, members in store.groups.items() if held[0] in members]
        flt = request.query_params.get("$filter", "")
        if flt.startswith("id eq '") and flt.endswith("'"):
            value = [v for v in value if v["id"] == flt[7:-1]]
        return logged(request, JSONResponse({"odata.context": "sandbox", "value": value}))

    @app.get("/v1.0/myorg/groups/{group}/datasets")
    async def get_datasets(group: str, request: Request) -> Response:
        if (denied := principal(request, group)) is not None:
            return logged(request, denied)
        value = [{"id": d["id"], "name": d["name"], "addRowsAPIEnabled": True, "configuredBy": client_id,
                  "isRefreshable": False, "isEffectiveIdentityRequired": False,
                  "isEffectiveIdentityRolesRequired": False, "isOnPremGatewayRequired": False}
                 for d in store.datasets.values() if d["group"] == group]
        return logged(request, JSONResponse({"odata.context": "sandbox", "value": value}))

    @app.post("/v1.0/myorg/groups/{group}/datasets")
    async def post_dataset(group: str, request: Request) -> Response:
        if (denied := principal(request, group)) is not None:
            return logged(request, denied)
        retention = request.query_params.get("defaultRetentionPolicy", "None")
        body = await body_json(request)
        if retention not in RETENTION_CAP:
            return logged(request, error(400, "InvalidRequest", f"defaultRetentionPolicy {retention!r} is invalid"))
        if not isinstance(body, dict) or not body.get("name") or not isinstance(body.get("tables"), list):
            return logged(request, error(400, "InvalidRequest", "name and tables are required"))
        if body.get("defaultMode") in ("Streaming", "PushStreaming"):
            return logged(request, error(400, "FeatureDeprecatedError", "Real-time streaming is retired"))
        if body.get("defaultMode") != "Push":
            return logged(request, error(400, "InvalidRequest", "only push datasets can be created through the API"))
        tables = {}
        for t in body["tables"]:
            cols = t.get("columns") or []
            bad = [c for c in cols if str(c.get("dataType", "")).lower() not in TYPES]
            if bad or not cols or len(cols) > 75:
                return logged(request, error(400, "InvalidRequest", f"table {t.get('name')}: invalid columns"))
            tables[str(t["name"])] = {"columns": cols, "rows": []}
        ds_id = str(uuid.uuid4())
        store.datasets[ds_id] = {"id": ds_id, "name": body["name"], "group": group, "retention": retention,
                                 "tables": tables}
        return logged(request, JSONResponse({"id": ds_id, "name": body["name"], "defaultRetentionPolicy": retention},
                                            201))

    @app.get("/v1.0/myorg/groups/{group}/datasets/{dataset_id}/tables")
    async def get_tables(group: str, dataset_id: str, request: Request) -> Response:
        if (denied := principal(request, group)) is not None:
            return logged(request, denied)
        d = dataset_of(group, dataset_id)
        if d is None:
            return logged(request, error(404, "ItemNotFound", f"Dataset {dataset_id} not found"))
        value = [{"name": n, "columns": t["columns"]} for n, t in d["tables"].items()]
        return logged(request, JSONResponse({"odata.context": "sandbox", "value": value}))

    @app.put("/v1.0/myorg/groups/{group}/datasets/{dataset_id}/tables/{table}")
    async def put_table(group: str, dataset_id: str, table: str, request: Request) -> Response:
        if (denied := principal(request, group)) is not None:
            return logged(request, denied)
        d = dataset_of(group, dataset_id)
        body = await body_json(request)
        if d is None:
            return logged(request, error(404, "ItemNotFound", f"Dataset {dataset_id} not found"))
        if not isinstance(body, dict) or body.get("name") != table or not body.get("columns"):
            return logged(request, error(400, "InvalidRequest", "the body must be the table with its columns"))
        held = d["tables"].setdefault(table, {"columns": [], "rows": []})
        held["columns"] = body["columns"]
        held["rows"] = []
        return logged(request, JSONResponse({"name": table, "columns": body["columns"]}))

    @app.delete("/v1.0/myorg/groups/{group}/datasets/{dataset_id}/tables/{table}/rows")
    async def delete_rows(group: str, dataset_id: str, table: str, request: Request) -> Response:
        d, refused = table_of(request, group, dataset_id, table)
        if refused is not None:
            return refused
        d["tables"][table]["rows"] = []
        return logged(request, Response(status_code=200))

    @app.post("/v1.0/myorg/groups/{group}/datasets/{dataset_id}/tables/{table}/rows")
    async def post_rows(group: str, dataset_id: str, table: str, request: Request) -> Response:
        d, refused = table_of(request, group, dataset_id, table)
        if refused is not None:
            return refused
        wait = window(dataset_id).try_acquire()
        if wait is not None:
            return logged(request, error(429, "TooManyRequests", "POST rows rate limit reached for this dataset",
                                         {"Retry-After": str(max(1, math.ceil(wait)))}))
        window(dataset_id).release()
        body = await body_json(request)
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            return logged(request, error(400, "InvalidRequest", "the body must be {\"rows\": [...]}"))
        if len(rows) > max_rows_per_post:
            return logged(request, error(400, "InvalidRequest", f"{len(rows)} rows in one request; the limit is "
                                         f"{max_rows_per_post}"))
        cols = {c["name"]: c for c in d["tables"][table]["columns"]}
        for n, row in enumerate(rows):
            if not isinstance(row, dict):
                return logged(request, error(400, "InvalidRequest", f"row {n} is not an object"))
            unknown = sorted(set(row) - set(cols))
            problems = [f"unknown column {u}" for u in unknown] + [
                p for k, v in row.items() if k in cols and (p := _check_value(cols[k], v))]
            if problems:
                return logged(request, error(400, "InvalidRequest", f"row {n}: {'; '.join(problems)}"))
        held = d["tables"][table]["rows"]
        cap = RETENTION_CAP[d["retention"]]
        if d["retention"] == "None" and len(held) + len(rows) > cap:
            return logged(request, error(400, "InvalidRequest", f"table {table} would exceed {cap} rows"))
        held.extend(rows)
        if len(held) > cap:  # basicFIFO: the oldest rows go
            del held[: len(held) - cap]
        return logged(request, Response(status_code=200))

    return app


# ------------------------------------------------------------------------------------------------ swagger contract


class SwaggerContract:
    """Checks Power BI traffic against the published Swagger 2.0 document.

    ``check(method, url_path, query, request_body, status, response_body)`` returns the problems found: path and
    method not in the document, a query parameter not declared or outside its enum, a request body not valid for
    the operation's body schema, a 2xx status the operation does not declare, a response body not valid for the
    declared schema. Paths outside ``/v1.0/`` (the token endpoint) are not part of the document and are skipped.
    """

    def __init__(self, swagger_path: Path) -> None:
        from jsonschema import Draft4Validator

        self.doc = json.loads(Path(swagger_path).read_text(encoding="utf-8"))
        self._validator = Draft4Validator
        self._validators: dict[int, Any] = {}
        self.routes: list[tuple[re.Pattern[str], str, int, dict[str, Any]]] = []
        for path, ops in self.doc["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
            for method, op in ops.items():
                if isinstance(op, dict) and "operationId" in op:
                    self.routes.append((pattern, method.upper(), path.count("{"), op))
        self.checked: list[str] = []  # operationIds seen, in order

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        matches = [(n, op) for pattern, m, n, op in self.routes if m == method.upper() and pattern.match(path)]
        # a literal segment wins over a template segment (e.g. .../datasets/upstreamDataflows)
        return min(matches, key=lambda t: t[0])[1] if matches else None

    def _schema_problems(self, schema: Mapping[str, Any], body: Any, where: str) -> list[str]:
        validator = self._validators.get(id(schema))
        if validator is None:
            validator = self._validator({**schema, "definitions": self.doc["definitions"]})
            self._validators[id(schema)] = validator
        return [f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in validator.iter_errors(body)]

    def check(self, method: str, path: str, query: Mapping[str, str], request_body: Any, status: int,
              response_body: Any) -> list[str]:
        if not path.startswith("/v1.0/"):
            return []
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path}: no such operation in the swagger"]
        oid = op["operationId"]
        self.checked.append(oid)
        problems: list[str] = []
        params = [self._param(p) for p in op.get("parameters", [])]
        declared = {p["name"]: p for p in params if p.get("in") == "query"}
        for name, value in query.items():
            p = declared.get(name)
            if p is None:
                problems.append(f"{oid}: query parameter {name!r} is not declared")
            elif "enum" in p and value not in p["enum"]:
                problems.append(f"{oid}: query {name}={value!r} not in {p['enum']}")
        body_param = next((p for p in params if p.get("in") == "body"), None)
        if body_param is not None:
            if request_body is None and body_param.get("required"):
                problems.append(f"{oid}: request body is required")
            elif request_body is not None:
                problems += self._schema_problems(body_param["schema"], request_body, f"{oid} request")
        elif request_body is not None:
            problems.append(f"{oid}: the operation takes no request body")
        responses = op.get("responses", {})
        if 200 <= status < 300:
            declared_response = responses.get(str(status))
            if declared_response is None:
                problems.append(f"{oid}: status {status} is not a declared response ({sorted(responses)})")
            elif "schema" in declared_response:
                problems += self._schema_problems(declared_response["schema"], response_body, f"{oid} response")
        return problems

    def _param(self, p: Mapping[str, Any]) -> Mapping[str, Any]:
        if "$ref" in p:
            return self.doc["parameters"][p["$ref"].rsplit("/", 1)[-1]]
        return p
