"""docs/architecture.md describes the code as it is (issue 20, item 6: it had drifted): every
module path the documents name exists, and every package of realtime/ says in its `__init__`
what it owns and what it may import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH_RE = re.compile(r"\b((?:realtime|sessions_app|project|demo)/[\w/]+\.py)\b")


@pytest.mark.parametrize("doc", [d for d in DOCS if d.name != "benchmarks.md"], ids=lambda d: d.name)
def test_every_module_a_document_names_exists(doc):
    # benchmarks.md is history: its rows name the modules of the commit they measured.
    missing = sorted({m for m in PATH_RE.findall(doc.read_text()) if not (ROOT / m).exists()})
    assert missing == []


@pytest.mark.parametrize("package", sorted(p.parent.name for p in (ROOT / "realtime").glob("*/__init__.py")))
def test_every_package_says_what_it_owns_and_may_import(package):
    docstring = ast.get_docstring(ast.parse((ROOT / "realtime" / package / "__init__.py").read_text())) or ""
    assert "May import" in docstring, package
