"""``ledgerbridge.domain`` and ``ledgerbridge.model`` must stay pure: no networking, database, filesystem or
process library, no ``open()``. Checked on the source text (AST), so a module is judged without importing it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ledgerbridge"
PURE_PACKAGES = ("domain", "model")

#: Top-level modules that do I/O (files, network, databases, processes, event loops) or load code dynamically.
FORBIDDEN_MODULES = frozenset(
    {
        # filesystem and OS
        "os", "pathlib", "io", "shutil", "tempfile", "glob", "fnmatch", "fileinput", "mmap", "fcntl", "builtins",
        "importlib", "pickle", "shelve", "dbm", "zipfile", "tarfile", "gzip", "bz2", "lzma", "csv",
        # processes and event loops
        "subprocess", "asyncio", "multiprocessing", "threading", "concurrent", "signal", "select", "selectors",
        # network
        "socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp", "ftplib", "smtplib", "email",
        "xmlrpc", "nats", "grpc", "websockets",
        # databases and durable execution
        "sqlite3", "sqlalchemy", "alembic", "psycopg", "psycopg2", "asyncpg", "duckdb", "dbos", "redis", "pymongo",
        "beancount",
    }
)
#: Builtins that reach outside the process or load code by name.
FORBIDDEN_CALLS = frozenset({"open", "__import__", "exec", "eval", "compile", "input", "breakpoint"})


def impurities(source: str, filename: str = "<string>") -> list[str]:
    """Every forbidden import or call in ``source``, as ``file:line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            found.append(f"{filename}:{node.lineno}: calls {node.func.id}()")
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{filename}:{node.lineno}: imports {name}")
    return found


def pure_modules() -> list[Path]:
    return sorted(p for pkg in PURE_PACKAGES for p in (SRC / pkg).rglob("*.py"))


def test_walk_finds_the_modules() -> None:
    names = {p.relative_to(SRC).as_posix() for p in pure_modules()}
    # The walk must see real modules of both packages, or the purity test below would pass on nothing.
    assert {"domain/types.py", "domain/billing.py", "model/entities.py", "model/money.py"} <= names


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_module_is_pure(path: Path) -> None:
    bad = impurities(path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix())
    assert not bad, "domain/ and model/ must not do I/O:\n" + "\n".join(bad)


PLANTED = '''
import os.path
import json, socket
from sqlalchemy import select
from urllib.request import urlopen
import dbos as durable
from ledgerbridge.model import Money
from . import sibling

def load(p):
    with open(p) as f:
        return f.read()

def sneaky():
    return __import__("subprocess")
'''


def test_detector_catches_a_planted_bad_module() -> None:
    assert sorted(impurities(PLANTED, "planted.py")) == [
        "planted.py:11: calls open()",
        "planted.py:15: calls __import__()",
        "planted.py:2: imports os.path",
        "planted.py:3: imports socket",
        "planted.py:4: imports sqlalchemy",
        "planted.py:5: imports urllib.request",
        "planted.py:6: imports dbos",
    ]


def test_detector_passes_a_clean_module() -> None:
    clean = "import datetime as dt\nfrom decimal import Decimal\nfrom pydantic import BaseModel\nx = Decimal(1)\n"
    assert impurities(clean) == []
