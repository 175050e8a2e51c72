"""Sample consulting firm generator: writes a realistic PSA export (``docs/file-format.md``) for a seed.

Deterministic: the same seed and parameters give the same bytes (every random stream is a ``random.Random``
seeded from a string, which CPython hashes with SHA-512; no wall clock, no set or hash() ordering).
Streaming: time entries and expenses are written day by day / month by month and never held in memory.
Money is never a float: amounts, rates and hours are integers of minor units (cents, micro-units, quarter hours)
until they are formatted as decimal strings.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from ledgerbridge.samplefirm.fileformat import (
    FILE_MODELS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    SOURCE_SYSTEM,
    columns,
)

GENERATOR_VERSION = "1"

# --------------------------------------------------------------------------- the firm's fixed facts (chart.md)

ENTITIES: tuple[tuple[str, str, str, str, str], ...] = (
    # id, name, functional currency, country, tax jurisdiction
    ("US01", "Meridian Consulting Inc.", "USD", "US", "US"),
    ("UK01", "Meridian Consulting Ltd", "GBP", "GB", "GB"),
    ("DE01", "Meridian Consulting GmbH", "EUR", "DE", "DE"),
)
ENTITY_CURRENCY = {e[0]: e[2] for e in ENTITIES}
ENTITY_JURISDICTION = {e[0]: e[4] for e in ENTITIES}
ENTITY_SUFFIX = {"US01": "US", "UK01": "UK", "DE01": "DE"}
ENTITY_WEIGHTS = (("US01", 5), ("UK01", 3), ("DE01", 2))  # share of staff and customers

ACCOUNTS: tuple[tuple[str, str, str, str], ...] = (
    # code, name, type, required dimensions (;-joined)
    ("1100", "Accounts receivable", "asset", ""),
    ("1200", "Unbilled receivables", "asset", ""),
    ("2100", "Accrued payroll", "liability", ""),
    ("2200", "Employee expenses payable", "liability", ""),
    ("2300", "Sales tax / VAT payable", "liability", ""),
    ("2400", "Deferred revenue", "liability", ""),
    ("4000", "Service revenue (T&M)", "revenue", "project"),
    ("4100", "Fixed-fee revenue", "revenue", "project"),
    ("4200", "Milestone revenue", "revenue", "project"),
    ("4300", "Reimbursable expense revenue", "revenue", ""),
    ("4900", "Invoice clearing (invoices booked by the ERP)", "revenue", ""),
    ("5000", "Project labor cost", "expense", "project;cost_center"),
    ("5100", "Project expenses", "expense", "project;cost_center"),
    ("7900", "FX and rounding differences", "expense", ""),
)

TAX_CODES: tuple[tuple[str, str, str, str], ...] = (
    # code, name, jurisdiction, rate
    ("US-EXEMPT", "US services, no sales tax", "US", "0.00"),
    ("UK-VAT20", "UK VAT standard rate 20%", "GB", "0.20"),
    ("DE-VAT19", "DE Umsatzsteuer 19%", "DE", "0.19"),
)
TAX_CODE_BY_JURISDICTION = {t[2]: t[0] for t in TAX_CODES}

ROLES: tuple[str, ...] = ("Analyst", "Consultant", "Senior Consultant", "Manager", "Partner")
ROLE_WEIGHTS = (25, 30, 25, 15, 5)
ROLE_SLUG = {"Analyst": "ANL", "Consultant": "CON", "Senior Consultant": "SCO", "Manager": "MGR", "Partner": "PTR"}
#: standard bill rate per hour per role, per currency (whole units)
BILL_RATES: dict[str, tuple[int, ...]] = {
    "USD": (150, 200, 260, 320, 450),
    "GBP": (120, 160, 210, 260, 360),
    "EUR": (140, 185, 240, 295, 415),
}
#: cost rate per hour per role in USD cents, before per-person variation and currency scaling
COST_BASE_USD_CENTS = (5200, 7000, 9200, 12000, 17000)
#: rough planning FX (per mille of USD) for cost budgets and cost-rate scaling; never used for amounts in files
PLAN_FX_PERMILLE = {"USD": 1000, "GBP": 1270, "EUR": 1085}
#: share of a role's week spent on client work (rest internal), in 32nds
ROLE_UTILISATION_32 = (29, 28, 27, 22, 14)

COST_CENTERS = ("DEL", "ADV", "OPS")
DEPARTMENTS = (("DEP-DEL", "Delivery"), ("DEP-ADV", "Advisory"), ("DEP-OPS", "Operations"))
LOCATIONS = (
    ("LOC-NYC", "New York", "US01"),
    ("LOC-SFO", "San Francisco", "US01"),
    ("LOC-LON", "London", "UK01"),
    ("LOC-MAN", "Manchester", "UK01"),
    ("LOC-BER", "Berlin", "DE01"),
    ("LOC-MUC", "München", "DE01"),
)

FIRST_NAMES = {
    "US01": ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
             "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Carlos", "María", "Wei", "Priya",
             "Aisha", "Daniel", "Grace", "Kevin"),
    "UK01": ("Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Mia", "Charlie", "Emily", "Thomas",
             "Sophie", "Oscar", "Grace", "William", "Lily", "Alfie", "Freya", "Rohan", "Siobhan", "Niamh", "Callum"),
    "DE01": ("Lukas", "Anna", "Jürgen", "Sophie", "Maximilian", "Marie", "Felix", "Lena", "Jonas", "Hannah",
             "Leon", "Katharina", "Paul", "Laura", "Björn", "Jörg", "Emine", "Mehmet", "Zoë", "Tobias"),
}
LAST_NAMES = {
    "US01": ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
             "Hernandez", "Lopez", "Wilson", "Anderson", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Patel",
             "Nguyen", "Kim", "Chen", "O'Connor"),
    "UK01": ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright",
             "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "O'Brien", "Khan"),
    "DE01": ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
             "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Yılmaz",
             "Weiß"),
}
COMPANY_PREFIXES = (
    "Northwind", "Contoso", "Fabrikam", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Acme",
    "Hooli", "Vandelay", "Wonka", "Cyberdyne", "Soylent", "Gringotts", "Oscorp", "Aperture", "Blue Sun", "Monarch",
    "Pied Piper", "Massive Dynamic", "Dunder", "Prestige", "Sterling", "Bluth", "Nakatomi", "Virtucon", "Zorg",
    "Black Mesa",
)
COMPANY_INDUSTRIES = ("Logistics", "Health", "Energy", "Retail", "Bank", "Insurance", "Foods", "Pharma", "Telecom",
                      "Motors", "Media", "Chemicals")
COMPANY_SUFFIX = {"US01": ("Inc.", "Corp.", "LLC"), "UK01": ("plc", "Ltd"), "DE01": ("GmbH", "AG", "SE")}

CONTRACT_TYPES = ("time_and_materials", "fixed_fee", "milestone")
ENGAGEMENTS = {
    "time_and_materials": ("Managed services", "Staff augmentation", "Data platform support", "Advisory retainer",
                           "Application support"),
    "fixed_fee": ("ERP implementation", "Cloud migration", "Finance transformation", "Security assessment",
                  "CRM rollout"),
    "milestone": ("Core banking upgrade", "Supply-chain redesign", "Data warehouse build", "Digital storefront",
                  "Payroll replacement"),
}
TASKS = {
    "time_and_materials": ("Support", "Development", "Analysis", "Project management"),
    "fixed_fee": ("Discovery", "Design", "Build", "Testing", "Deployment"),
    "milestone": ("Phase 1", "Phase 2", "Phase 3", "Testing", "Go-live"),
    "internal": ("Training", "Pre-sales", "Internal meeting", "Recruiting", "Practice development"),
}
DESCRIPTIONS = (
    "Client workshop", "Working session", "Documentation", "Stand-up and follow-ups", "Review and rework",
    "Requirements interviews", "Configuration", "Data analysis", "", "Status report, risks and issues",
    "Design review", "Testing support", "Handover notes", "Stakeholder meeting", "Estimation", "",
)
EXPENSE_CATEGORIES: tuple[tuple[str, int, int, int, tuple[str, ...]], ...] = (
    # category, weight (of 20), min cents, max cents, descriptions
    ("travel", 6, 4000, 90000, ("Flight to client site", "Train to client office", "Taxi to client", "Rental car")),
    ("lodging", 5, 12000, 45000, ("Hotel, 1 night", "Hotel, 2 nights", "Hotel, 3 nights")),
    ("meals", 7, 1200, 9500, ("Lunch with client", "Team dinner", "Working breakfast", "Per diem meals")),
    ("software", 2, 1000, 30000, ("SaaS licence", "Cloud credits", "Test tooling subscription")),
)

# --------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True)
class FileStat:
    name: str
    rows: int
    bytes: int
    sha256: str


@dataclass(slots=True)
class GenerationReport:
    """What :func:`generate_firm` wrote. ``elapsed_seconds`` is wall time and is not written to the manifest."""

    out_dir: Path
    seed: int
    employees: int
    months: int
    start: str
    window_start: dt.date
    window_end: dt.date
    as_of: dt.datetime
    files: list[FileStat] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    def rows(self, name: str) -> int:
        for f in self.files:
            if f.name == name:
                return f.rows
        raise KeyError(name)

    @property
    def total_rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


# --------------------------------------------------------------------------- formatting helpers


def _cents(c: int) -> str:
    """Integer minor units -> '123.45' (non-negative)."""
    return f"{c // 100}.{c % 100:02d}"


def _quarters(q: int) -> str:
    """Quarter hours -> '7.25'."""
    return f"{q // 4}.{(q % 4) * 25:02d}"


def _ts(t: dt.datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:00Z"


def _b(v: bool) -> str:
    return "true" if v else "false"


def _month_start(year: int, month: int, delta: int) -> dt.date:
    m = year * 12 + (month - 1) + delta
    return dt.date(m // 12, m % 12 + 1, 1)


def _month_end(d: dt.date) -> dt.date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def parse_start(start: str) -> dt.date:
    """'YYYY-MM' -> first day of that month; a clear error otherwise."""
    try:
        y, m = start.split("-")
        if len(y) != 4 or len(m) != 2:
            raise ValueError
        return dt.date(int(y), int(m), 1)
    except ValueError:
        raise ValueError(f"start {start!r} is not a month: expected YYYY-MM, e.g. 2026-09") from None


def _weekdays(first: dt.date, last: dt.date) -> list[dt.date]:
    out = []
    d = first
    one = dt.timedelta(days=1)
    while d <= last:
        if d.weekday() < 5:
            out.append(d)
        d += one
    return out


def _rng(seed: int, stream: str) -> random.Random:
    # str seeds are hashed with SHA-512 by CPython's random: stable across runs and platforms.
    return random.Random(f"ledgerbridge-samplefirm:{seed}:{stream}")


def _weighted(rng: random.Random, items: Sequence[tuple[str, int]]) -> str:
    total = sum(w for _, w in items)
    r = rng.randrange(total)
    for item, w in items:
        if r < w:
            return item
        r -= w
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- internal master records


@dataclass(slots=True)
class _Customer:
    id: str
    name: str
    entity: str
    currency: str
    terms: int
    short: str


@dataclass(slots=True)
class _Project:
    id: str
    name: str
    customer: _Customer
    entity: str
    contract_type: str
    currency: str
    cost_center: str
    start: dt.date
    end: dt.date | None
    internal: bool = False
    tasks: tuple[str, ...] = ()
    daily_cost_cents: int = 0  # planned team cost per working day in project currency
    contract_value: int | None = None  # whole units
    estimated_cost: int | None = None


@dataclass(slots=True)
class _Resource:
    id: str
    name: str
    role_idx: int
    entity: str
    cost_center: str
    cost_cents: list[tuple[dt.date, dt.date | None, int]] = field(default_factory=list)
    slots: tuple[int, ...] = ()  # 32 slots, each an index into ``projects``
    projects: list[_Project] = field(default_factory=list)
    late_submitter: bool = False


@dataclass(slots=True)
class _Firm:
    window_start: dt.date
    window_end: dt.date
    as_of: dt.datetime
    customers: list[_Customer]
    projects: list[_Project]
    internal: dict[str, _Project]
    resources: list[_Resource]


def _build_firm(seed: int, employees: int, months: int, window_start: dt.date) -> _Firm:
    rng = _rng(seed, "master")
    window_end = _month_end(_month_start(window_start.year, window_start.month, months - 1))
    as_of = dt.datetime.combine(window_end + dt.timedelta(days=1), dt.time(0, 0))

    # customers: at least one per entity, then weighted
    n_customers = max(6, employees // 8)
    names = [(p, f"{p} {i}") for p in COMPANY_PREFIXES for i in COMPANY_INDUSTRIES]
    rng.shuffle(names)
    customers: list[_Customer] = []
    for i in range(n_customers):
        entity = ENTITIES[i][0] if i < 3 else _weighted(rng, ENTITY_WEIGHTS)
        short, base = names[i % len(names)]
        if i >= len(names):
            base += f" {i // len(names) + 1}"
        suffix = rng.choice(COMPANY_SUFFIX[entity])
        currency = ENTITY_CURRENCY[entity]
        if entity != "US01" and rng.random() < 0.12:
            currency = "USD"  # a European customer contracting in dollars
        customers.append(_Customer(f"CUST-{i + 1:05d}", f"{base} {suffix}", entity, currency,
                                   rng.choice((30, 30, 45, 60)), short))

    # client projects: 1-3 per customer; the first three cover every contract type
    projects: list[_Project] = []
    for ci, cust in enumerate(customers):
        for k in range(rng.choice((1, 2, 2, 3))):
            if ci < 3 and k == 0:
                ctype = CONTRACT_TYPES[ci]
            else:
                ctype = _weighted(rng, (("time_and_materials", 12), ("fixed_fee", 5), ("milestone", 3)))
            pid = f"PRJ-{len(projects) + 1:05d}"
            name = f"{cust.short} {rng.choice(ENGAGEMENTS[ctype])}"
            if ctype == "time_and_materials":
                start = window_start - dt.timedelta(days=rng.randint(14, 400))
                end = None
                cc = "DEL"
            else:
                start = window_start - dt.timedelta(days=rng.randint(14, 200))
                end = _month_end(window_end + dt.timedelta(days=rng.randint(30, 270)))
                cc = rng.choice(("DEL", "ADV"))
            tasks = TASKS[ctype]
            projects.append(_Project(pid, name, cust, cust.entity, ctype, cust.currency,
                                     f"CC-{cc}-{ENTITY_SUFFIX[cust.entity]}", start, end,
                                     tasks=tuple(tasks[j % len(tasks)] for j in range(8))))

    internal: dict[str, _Project] = {}
    for eid, ename, cur, _c, _j in ENTITIES:
        cust = _Customer(f"CUST-INT-{eid}", f"{ename} (internal)", eid, cur, 30, "Meridian")
        customers.append(cust)
        itasks = TASKS["internal"]
        internal[eid] = _Project(f"PRJ-INT-{eid}", f"Internal non-billable time {eid}", cust, eid,
                                 "time_and_materials", cur, f"CC-OPS-{ENTITY_SUFFIX[eid]}",
                                 _month_start(window_start.year, 1, -12), None, internal=True,
                                 tasks=tuple(itasks[j % len(itasks)] for j in range(8)))

    by_entity: dict[str, list[_Project]] = {e[0]: [p for p in projects if p.entity == e[0]] for e in ENTITIES}
    for e in ENTITIES:
        rng.shuffle(by_entity[e[0]])
    round_robin = dict.fromkeys(ENTITY_CURRENCY, 0)

    resources: list[_Resource] = []
    raise_months = list(range(1, months))
    rate_origin = dt.date(window_start.year - 1, 1, 1)
    for i in range(employees):
        entity = _weighted(rng, ENTITY_WEIGHTS)
        role_idx = ROLES.index(_weighted(rng, tuple(zip(ROLES, ROLE_WEIGHTS, strict=True))))
        cc = rng.choice(("DEL", "DEL", "ADV")) if role_idx < 4 else rng.choice(("DEL", "ADV"))
        name = f"{rng.choice(FIRST_NAMES[entity])} {rng.choice(LAST_NAMES[entity])}"
        r = _Resource(f"RES-{i + 1:05d}", name, role_idx, entity, f"CC-{cc}-{ENTITY_SUFFIX[entity]}")
        # cost rate in home currency, with a raise inside the window for about a third of the staff
        cur = ENTITY_CURRENCY[entity]
        usd = COST_BASE_USD_CENTS[role_idx] * rng.randint(88, 112) // 100
        cost = usd * 1000 // PLAN_FX_PERMILLE[cur]
        if raise_months and rng.random() < 0.35:
            rd = _month_start(window_start.year, window_start.month, rng.choice(raise_months))
            r.cost_cents.append((rate_origin, rd - dt.timedelta(days=1), cost))
            r.cost_cents.append((rd, None, cost * rng.randint(103, 108) // 100))
        else:
            r.cost_cents.append((rate_origin, None, cost))
        # project assignment: a primary client project (round robin within the home entity, 10% abroad),
        # sometimes a secondary, and the home entity's internal project for non-client time
        pool_entity = entity if rng.random() < 0.9 and by_entity[entity] else _weighted(rng, ENTITY_WEIGHTS)
        pool = by_entity[pool_entity] or projects
        primary = pool[round_robin[pool_entity] % len(pool)]
        round_robin[pool_entity] += 1
        r.projects = [internal[entity], primary]
        client_slots = ROLE_UTILISATION_32[role_idx]
        if rng.random() < 0.45:
            secondary = rng.choice(projects)
            if secondary is not primary:
                r.projects.append(secondary)
        if len(r.projects) == 3:
            sec = client_slots * 3 // 10
            slots = [0] * (32 - client_slots) + [1] * (client_slots - sec) + [2] * sec
        else:
            slots = [0] * (32 - client_slots) + [1] * client_slots
        r.slots = tuple(slots)
        r.late_submitter = rng.random() < 0.03
        # planned cost per working day (8 h) on each client project, in the project currency
        for pi, p in enumerate(r.projects):
            if pi == 0:
                continue
            share = slots.count(pi)
            daily = 8 * cost * share // 32
            p.daily_cost_cents += daily * PLAN_FX_PERMILLE[cur] // PLAN_FX_PERMILLE[p.currency]
        resources.append(r)

    # budgets of fixed-fee and milestone projects from the planned team cost over the project life
    for p in projects:
        if p.contract_type == "time_and_materials" or p.end is None:
            continue
        daily = p.daily_cost_cents or 2 * 8 * 8000
        working_days = (p.end - p.start).days * 5 // 7
        est = daily * working_days * rng.randint(95, 115) // 100 // 100  # whole units
        p.estimated_cost = max(100, est // 100 * 100)
        p.contract_value = max(1000, p.estimated_cost * rng.randint(125, 160) // 100 // 1000 * 1000)

    return _Firm(window_start, window_end, as_of, customers, projects, internal, resources)


# --------------------------------------------------------------------------- writers


class _Out:
    """Open CSV files of one export directory."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir
        self.counts: dict[str, int] = {}

    def write(self, name: str, rows: Iterable[Sequence[str]]) -> None:
        header = columns(FILE_MODELS[name])
        n = 0
        with (self.dir / name).open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            for row in rows:
                if len(row) != len(header):
                    _shape_error(name, header, row)
                w.writerow(row)
                n += 1
        self.counts[name] = n


def _shape_error(name: str, header: Sequence[str], row: Sequence[str]) -> None:
    """The generator and the canonical model disagree (a field was added or moved): stop loudly."""
    raise RuntimeError(f"{name}: generator row has {len(row)} values but the {FILE_MODELS[name].__name__} model has "
                       f"{len(header)} fields ({','.join(header)}); update ledgerbridge.samplefirm.generator")


def _master_rows(firm: _Firm, seed: int, months: int) -> dict[str, list[list[str]]]:
    rng = _rng(seed, "reference")
    ws = firm.window_start
    out: dict[str, list[list[str]]] = {}
    out["legal_entities.csv"] = [list(e) for e in ENTITIES]
    out["accounts.csv"] = [[code, name, typ, "", "true", dims] for code, name, typ, dims in ACCOUNTS]
    out["tax_codes.csv"] = [[c, n, j, r, "false", "2300", "true"] for c, n, j, r in TAX_CODES]

    dims: list[list[str]] = []
    for eid, _n, _c, _k, _j in ENTITIES:
        sfx = ENTITY_SUFFIX[eid]
        for cc, label in zip(COST_CENTERS, ("Delivery", "Advisory", "Operations"), strict=True):
            dims.append(["cost_center", f"CC-{cc}-{sfx}", f"{label} {sfx}", eid, "true"])
    for code, name in DEPARTMENTS:
        dims.append(["department", code, name, "", "true"])
    for code, name, eid in LOCATIONS:
        dims.append(["location", code, name, eid, "true"])
    out["dimensions.csv"] = dims

    periods: list[list[str]] = []
    for eid, *_ in ENTITIES:
        for k in range(-1, months):
            s = _month_start(ws.year, ws.month, k)
            periods.append([eid, f"{s.year:04d}-{s.month:02d}", s.isoformat(), _month_end(s).isoformat(),
                            "closed" if k < 0 else "open"])
    out["periods.csv"] = periods

    out["customers.csv"] = [
        [c.id, c.name, c.entity, c.currency, ENTITY_JURISDICTION[c.entity],
         TAX_CODE_BY_JURISDICTION[ENTITY_JURISDICTION[c.entity]], str(c.terms), "true"]
        for c in firm.customers
    ]
    out["projects.csv"] = [
        [p.id, p.name, p.customer.id, p.entity, p.contract_type, p.currency, p.cost_center, "active",
         p.start.isoformat(), p.end.isoformat() if p.end else "",
         f"{p.contract_value}.00" if p.contract_value is not None else "",
         f"{p.estimated_cost}.00" if p.estimated_cost is not None and p.contract_type == "fixed_fee" else ""]
        for p in [*firm.projects, *firm.internal.values()]
    ]
    out["resources.csv"] = [[r.id, r.name, ROLES[r.role_idx], r.cost_center, r.entity, "true"]
                            for r in firm.resources]

    rates: list[list[str]] = []
    origin = dt.date(ws.year - 1, 1, 1).isoformat()
    # Bill rates: the firm's standard card per role in each currency (BILL_RATES), applied to every client project
    # in the project currency as role+project lines -- a rate line has no currency selector, so one scope carries
    # one currency. About a quarter of T&M projects have negotiated rates 5-15% below the card for 1-2 roles, and
    # some projects bill one named person at a personal rate (resource+project, the most specific scope).
    staff: dict[str, list[_Resource]] = defaultdict(list)
    for r in firm.resources:
        for sp in r.projects[1:]:
            staff[sp.id].append(r)
    for p in firm.projects:
        discounted = set()
        if p.contract_type == "time_and_materials" and rng.random() < 0.25:
            discounted = set(rng.sample(range(len(ROLES)), rng.choice((1, 2))))
        for role_idx, role in enumerate(ROLES):
            rate = BILL_RATES[p.currency][role_idx]
            if role_idx in discounted:
                rate = rate * rng.randint(85, 95) // 100
            rates.append([f"RC-BILL-{ROLE_SLUG[role]}-{p.id}", "bill", f"{rate}.00", p.currency, origin, "", "",
                          role, p.id])
        if staff[p.id] and rng.random() < 0.15:
            r = rng.choice(staff[p.id])
            rate = BILL_RATES[p.currency][r.role_idx] * rng.randint(90, 120) // 100
            rates.append([f"RC-BILL-{r.id}-{p.id}", "bill", f"{rate}.00", p.currency, origin, "", r.id, "", p.id])
    for r in firm.resources:
        cur = ENTITY_CURRENCY[r.entity]
        for k, (frm, to, cents) in enumerate(r.cost_cents, start=1):
            rates.append([f"RC-COST-{r.id}-{k}", "cost", _cents(cents), cur, frm.isoformat(),
                          to.isoformat() if to else "", r.id, "", ""])
    out["rate_cards.csv"] = rates

    ms: list[list[str]] = []
    as_of_date = firm.as_of.date()
    for p in firm.projects:
        if p.contract_type != "milestone" or p.end is None or p.contract_value is None:
            continue
        n = rng.randint(3, 5)
        weights = [rng.randint(2, 5) for _ in range(n)]
        remaining = p.contract_value
        span = (p.end - p.start).days
        for k in range(n):
            amount = remaining if k == n - 1 else p.contract_value * weights[k] // sum(weights) // 100 * 100
            remaining -= amount
            due = p.start + dt.timedelta(days=span * (k + 1) // n)
            status, done = "planned", ""
            if due < ws:  # billed before the window: history, not news
                status, done = "invoiced", (due + dt.timedelta(days=rng.randint(-5, 3))).isoformat()
            elif due <= as_of_date and rng.random() < 0.85:
                completed = min(due + dt.timedelta(days=rng.randint(-5, 10)), as_of_date - dt.timedelta(days=1))
                status, done = "completed", max(completed, ws).isoformat()
            ms.append([f"MS-{p.id}-{k + 1}", p.id, f"Milestone {k + 1} of {n}", f"{amount}.00", p.currency,
                       due.isoformat(), status, done])
    out["milestones.csv"] = ms
    return out


def _fx_rows(seed: int, first: dt.date, last: dt.date) -> Iterable[list[str]]:
    """Daily business-day rates: EUR/USD and GBP/USD random walks, crosses and inverses derived exactly."""
    rng = _rng(seed, "fx")
    eurusd, gbpusd = 1_085_000, 1_270_000  # micro-units
    six = Decimal("0.000001")
    one = Decimal(1)
    for d in _weekdays(first, last):
        eurusd += int(rng.gauss(0.0, eurusd * 0.004))
        gbpusd += int(rng.gauss(0.0, gbpusd * 0.0035))
        e = Decimal(eurusd).scaleb(-6)
        g = Decimal(gbpusd).scaleb(-6)
        eg = (e / g).quantize(six, rounding=ROUND_HALF_UP)
        ds = d.isoformat()
        for frm, to, rate in (
            ("EUR", "USD", e), ("GBP", "USD", g), ("EUR", "GBP", eg),
            ("USD", "EUR", one / e), ("USD", "GBP", one / g), ("GBP", "EUR", one / eg),
        ):
            yield [frm, to, str(rate.quantize(six, rounding=ROUND_HALF_UP)), ds, "samplefirm"]


# --------------------------------------------------------------------------- versions (shared by time and expenses)


class _Versions:
    """Produces the later versions of an approved item (rejection, recall, edit after approval) and counts rows.

    Every status change after v1 is a version of its own, so consecutive versions only ever make transitions that
    PSA practice allows (``domain.approvals.LEGAL_TRANSITIONS``): approved -> recalled / rejected / approved (edit),
    recalled / rejected -> submitted (corrected and resubmitted) -> approved. ``stats`` counts rows per status
    plus the ``edited`` and ``resubmitted`` events."""

    i_version = 2
    i_status = 9
    i_approved = 10
    i_updated = 11
    i_value = 7

    def __init__(self, rng: random.Random, as_of: dt.datetime) -> None:
        self.rng = rng
        self.as_of = as_of
        self.stats = {"items": 0, "versions": 0, "approved": 0, "submitted": 0, "draft": 0, "rejected": 0,
                      "recalled": 0, "edited": 0, "resubmitted": 0}

    def _later(self, t: dt.datetime, lo_days: int, hi_days: int) -> dt.datetime:
        d = (t + dt.timedelta(days=self.rng.randint(lo_days, hi_days))).date()
        return dt.datetime.combine(d, dt.time(8, 0)) + dt.timedelta(minutes=self.rng.randrange(600))

    def _version(self, base: list[str], extra: list[list[str]], status: str, updated: dt.datetime,
                 approved: dt.datetime | None = None, value: str | None = None) -> list[str]:
        row = list(base)
        row[self.i_version] = str(int(extra[-1][self.i_version] if extra else base[self.i_version]) + 1)
        row[self.i_status], row[self.i_updated] = status, _ts(updated)
        row[self.i_approved] = _ts(approved) if approved is not None else ""
        if value is not None:
            row[self.i_value] = value
        self.stats[status] += 1
        extra.append(row)
        return row

    def _resubmit(self, base: list[str], new_value: str, after: dt.datetime, chance: float,
                  extra: list[list[str]]) -> None:
        """With ``chance``: a corrected version is submitted 1-2 days after ``after``, and approved (a further
        version) 1-3 days later when that is before the export time."""
        if self.rng.random() >= chance:
            return
        t = self._later(after, 1, 2)
        if t >= self.as_of:
            return
        sub = self._version(base, extra, "submitted", t, value=new_value)
        self.stats["resubmitted"] += 1
        ap = self._later(t, 1, 3)
        if ap < self.as_of:
            self._version(sub, extra, "approved", ap, ap)

    def follow_up(self, v1: list[str], kind: int, approved: dt.datetime, new_value: str) -> list[list[str]]:
        """Later versions of ``v1`` (approved at ``approved``). ``kind``: 0 reject, 1 recall, 2 edit. A rejection
        changes ``v1`` in place (it was rejected instead of approved). Returns the extra rows in version order."""
        extra: list[list[str]] = []
        st = self.stats
        if kind == 0:  # rejected instead of approved; often corrected and resubmitted
            v1[self.i_status], v1[self.i_approved], v1[self.i_updated] = "rejected", "", _ts(approved)
            st["approved"] -= 1
            st["rejected"] += 1
            self._resubmit(v1, new_value, approved, 0.6, extra)
            return extra
        t = self._later(approved, 1, 10)
        if t >= self.as_of:
            return extra
        if kind == 1:  # recalled after approval (same values); half are corrected and resubmitted
            v2 = self._version(v1, extra, "recalled", t)
            self._resubmit(v2, new_value, t, 0.5, extra)
        else:  # edited after approval: a new approved version with other values, approved again 1-3 days later
            ap = self._later(t, 1, 3)
            if ap < self.as_of:
                self._version(v1, extra, "approved", t, ap, value=new_value)
                st["edited"] += 1
        return extra


class _ExpenseVersions(_Versions):
    i_version = 2
    i_status = 10
    i_approved = 11
    i_updated = 12
    i_value = 6


# --------------------------------------------------------------------------- time entries (the hot loop)


def _split_table(rng: random.Random) -> list[tuple[str, ...]]:
    """256 day shapes: 1-3 entries whose quarter-hour sizes sum to 7.5-9 h."""
    table: list[tuple[str, ...]] = []
    for _ in range(256):
        n = rng.choice((1, 2, 2, 3))
        total = rng.choice((30, 32, 32, 32, 32, 34, 36))
        parts: list[int] = []
        left = total
        for k in range(n - 1):
            hi = left - 4 * (n - 1 - k)
            q = rng.randint(4, max(4, hi - 4)) if hi > 4 else 4
            parts.append(q)
            left -= q
        parts.append(left)
        table.append(tuple(_quarters(q) for q in parts))
    return table


def _write_time_entries(path: Path, firm: _Firm, seed: int) -> dict[str, int]:
    rng = _rng(seed, "time")
    vers = _Versions(_rng(seed, "time-versions"), firm.as_of)
    st = vers.stats
    as_of = firm.as_of
    splits = _split_table(rng)
    descs = DESCRIPTIONS
    getbits = rng.getrandbits
    rand = rng.random
    # per resource constants: id, slot tuple of (project id, billable, tasks)
    res_info = []
    for r in firm.resources:
        proj = [(p.id, "false" if p.internal else "true", p.tasks) for p in r.projects]
        res_info.append((r.id, tuple(proj[s] for s in r.slots), r.late_submitter))
    first_day = firm.window_start - dt.timedelta(days=7)  # late submitters' last week of the closed month
    days = [d for d in _weekdays(first_day, firm.window_end)]
    seq = 0
    header = columns(FILE_MODELS["time_entries.csv"])
    week_key: dt.date | None = None
    week_ts: list[tuple[str, str, str, dt.datetime | None]] = []
    eighteen = dt.time(18, 0)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for day in days:
            monday = day - dt.timedelta(days=day.weekday())
            if monday != week_key:
                week_key = monday
                week_ts = []
                friday_eve = dt.datetime.combine(monday + dt.timedelta(days=4), dt.time(16, 0))
                for _rid, _slots, late in res_info:
                    if late and monday < firm.window_start:  # the closed month's last week, submitted late
                        base = max(monday + dt.timedelta(days=4), firm.window_start)
                        sub = dt.datetime.combine(base + dt.timedelta(days=rng.randint(2, 6)),
                                                  dt.time(9, 0)) + dt.timedelta(minutes=rng.randrange(480))
                    elif rand() < 0.15:  # submitted on Monday morning instead of Friday evening
                        sub = friday_eve + dt.timedelta(days=3, minutes=-420 + rng.randrange(180))
                    else:
                        sub = friday_eve + dt.timedelta(minutes=rng.randrange(240))
                    ap = dt.datetime.combine(sub.date() + dt.timedelta(days=rng.randint(1, 5)), dt.time(8, 0)) \
                        + dt.timedelta(minutes=rng.randrange(600))
                    if sub >= as_of:
                        week_ts.append(("submitted", "", "", None))  # updated_at = the work day, below
                    elif ap >= as_of:
                        week_ts.append(("submitted", "", _ts(sub), None))
                    else:
                        week_ts.append(("approved", _ts(ap), _ts(sub), ap))
            ds = day.isoformat()
            day_eve = _ts(dt.datetime.combine(day, eighteen))
            in_window = day >= firm.window_start
            batch = []
            for ri, (rid, slots, late) in enumerate(res_info):
                if not in_window and not late:
                    continue
                b = getbits(32)
                if (b & 31) < 2:  # ~6% days off (leave, sickness, public holidays)
                    continue
                status, approved, updated, ap_dt = week_ts[ri]
                if not updated:
                    updated = day_eve
                for hours in splits[(b >> 5) & 255]:
                    b2 = getbits(32)
                    pid, billable, tasks = slots[b2 & 31]
                    if billable == "true" and ((b2 >> 5) & 31) == 0:
                        billable = "false"  # ~3% non-billable work on a client project
                    seq += 1
                    row = [f"TE-{seq:09d}", SOURCE_SYSTEM, "1", pid, rid, tasks[(b2 >> 10) & 7], ds, hours,
                           billable, status, approved, updated, descs[(b2 >> 13) & 15]]
                    batch.append(row)
                    st["items"] += 1
                    if ap_dt is None:
                        st["submitted"] += 1
                        continue
                    st["approved"] += 1
                    exc = (b2 >> 17) & 1023
                    if exc < 51:  # <10 rejected (~1%), <31 recalled (~2%), <51 edited (~2%)
                        kind = 0 if exc < 10 else 1 if exc < 31 else 2
                        q = int(hours[:-3]) * 4 + int(hours[-2:]) // 25
                        dq = rng.choice((-8, -4, -2, -1, 1, 2, 4, 8))
                        new_q = min(96, max(1, q + dq))
                        if new_q == q:
                            new_q = q + 1
                        batch.extend(vers.follow_up(row, kind, ap_dt, _quarters(new_q)))
            if batch and len(batch[0]) != len(header):
                _shape_error(path.name, header, batch[0])
            w.writerows(batch)
    st["versions"] = st["approved"] + st["submitted"] + st["draft"] + st["rejected"] + st["recalled"]
    return {f"time_{k}": v for k, v in st.items()}


def _write_expenses(path: Path, firm: _Firm, seed: int) -> dict[str, int]:
    rng = _rng(seed, "expenses")
    vers = _ExpenseVersions(_rng(seed, "expense-versions"), firm.as_of)
    st = vers.stats
    cat_table: list[tuple[str, int, int, tuple[str, ...]]] = []
    for cat, weight, lo, hi, descs in EXPENSE_CATEGORIES:
        cat_table.extend([(cat, lo, hi, descs)] * weight)
    currencies = tuple(ENTITY_CURRENCY.values())
    seq = 0
    header = columns(FILE_MODELS["expenses.csv"])
    months = []
    m = firm.window_start
    while m <= firm.window_end:
        months.append(m)
        m = _month_start(m.year, m.month, 1)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for month in months:
            wd = _weekdays(month, _month_end(month))
            batch: list[list[str]] = []
            for r in firm.resources:
                home = ENTITY_CURRENCY[r.entity]
                client = r.projects[1:]
                for _ in range((0, 0, 1, 1, 1, 2, 2, 3)[rng.getrandbits(3)]):
                    p = rng.choice(client)
                    cat, lo, hi, descs = cat_table[rng.randrange(20)]
                    cur = home if rng.random() < 0.88 else rng.choice([c for c in currencies if c != home])
                    if p.entity != r.entity and rng.random() < 0.7:
                        cur = ENTITY_CURRENCY[p.entity]  # travelling to the project's country
                    cents = rng.randint(lo, hi)
                    billable = rng.random() < (0.3 if cat == "software" else 0.85)
                    day = rng.choice(wd)
                    sub = dt.datetime.combine(day + dt.timedelta(days=rng.randint(0, 6)), dt.time(17, 0)) \
                        + dt.timedelta(minutes=rng.randrange(180))
                    ap = dt.datetime.combine(sub.date() + dt.timedelta(days=rng.randint(1, 7)), dt.time(8, 0)) \
                        + dt.timedelta(minutes=rng.randrange(600))
                    seq += 1
                    st["items"] += 1
                    row = [f"EX-{seq:08d}", SOURCE_SYSTEM, "1", p.id, r.id, day.isoformat(), _cents(cents), cur,
                           cat, _b(billable), "", "", "", rng.choice(descs)]
                    batch.append(row)
                    if sub >= firm.as_of:
                        row[10], row[12] = "draft", _ts(dt.datetime.combine(day, dt.time(12, 0)))
                        st["draft"] += 1
                        continue
                    row[12] = _ts(sub)
                    if ap >= firm.as_of:
                        row[10] = "submitted"
                        st["submitted"] += 1
                        continue
                    row[10], row[11] = "approved", _ts(ap)
                    st["approved"] += 1
                    u = rng.randrange(1000)
                    if u < 50:
                        kind = 0 if u < 10 else 1 if u < 30 else 2
                        new = max(100, cents + cents * rng.choice((-30, -20, -10, 10, 15, 25)) // 100)
                        batch.extend(vers.follow_up(row, kind, ap, _cents(new)))
            if batch and len(batch[0]) != len(header):
                _shape_error(path.name, header, batch[0])
            w.writerows(batch)
    st["versions"] = st["approved"] + st["submitted"] + st["draft"] + st["rejected"] + st["recalled"]
    return {f"expense_{k}": v for k, v in st.items()}


# --------------------------------------------------------------------------- entry point


def _file_stat(path: Path, rows: int) -> FileStat:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            h.update(chunk)
            size += len(chunk)
    return FileStat(path.name, rows, size, h.hexdigest())


def generate_firm(out_dir: Path, seed: int = 42, employees: int = 40, months: int = 3,
                  start: str = "2026-09") -> GenerationReport:
    """Write the sample firm's PSA export into ``out_dir`` (created if missing; files there are overwritten).

    ``employees`` staff book time on every weekday of ``months`` months from ``start`` (YYYY-MM); the month
    before ``start`` is a closed period. Returns row counts, sizes and SHA-256 of every file (also in
    ``manifest.json``)."""
    if employees < 1:
        raise ValueError(f"employees must be at least 1, got {employees}")
    if months < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    window_start = parse_start(start)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    firm = _build_firm(seed, employees, months, window_start)
    out = _Out(out_dir)
    master = _master_rows(firm, seed, months)
    for name in FILE_MODELS:
        if name in master:
            out.write(name, master[name])
    pre_start = _month_start(window_start.year, window_start.month, -1)
    out.write("fx_rates.csv", _fx_rows(seed, pre_start, firm.window_end))
    stats = _write_time_entries(out_dir / "time_entries.csv", firm, seed)
    out.counts["time_entries.csv"] = stats["time_versions"]
    stats.update(_write_expenses(out_dir / "expenses.csv", firm, seed))
    out.counts["expenses.csv"] = stats["expense_versions"]

    report = GenerationReport(out_dir, seed, employees, months, start, firm.window_start, firm.window_end,
                              firm.as_of, stats=stats)
    report.files = [_file_stat(out_dir / name, out.counts[name]) for name in FILE_MODELS]
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "generator": f"ledgerbridge.samplefirm/{GENERATOR_VERSION}",
        "source_system": SOURCE_SYSTEM,
        "seed": seed,
        "parameters": {"employees": employees, "months": months, "start": start},
        "window": {"start": firm.window_start.isoformat(), "end": firm.window_end.isoformat(),
                   "as_of": firm.as_of.isoformat() + "Z", "closed_period": f"{pre_start:%Y-%m}"},
        "files": {f.name: {"rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for f in report.files},
        "stats": stats,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    report.elapsed_seconds = time.perf_counter() - t0
    return report
