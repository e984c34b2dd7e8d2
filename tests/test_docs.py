"""`make docs` builds (pdoc): the guide and the code reference; and every module says what it is for."""

import ast
import subprocess
import sys

from common.settings import Settings
from scripts.build_docs import GUIDE, PACKAGES
from tests.conftest import ROOT


def test_docs_build_without_import_errors_or_broken_references(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "scripts.build_docs", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    for module in ("crypto_pipeline/definitions", "crypto_pipeline/resources/http", "api/main", "warehouse/store"):
        assert (tmp_path / f"{module}.html").is_file(), module
    settings_page = (tmp_path / "common" / "settings.html").read_text()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in settings_page]
    assert not missing, f"the settings table in the docs lacks {missing}"
    guide = {path.name for path in (tmp_path / "guide").iterdir()}
    assert guide == {"index.html"} | {f"{page.stem}.html" for page in GUIDE[1:]}, guide
    readme = (tmp_path / "guide" / "index.html").read_text()
    assert 'href="benchmarks.html"' in readme and 'href="../index.html"' in readme  # docs/*.md links rewritten
    assert "<table>" in (tmp_path / "guide" / "settings.html").read_text()


def test_every_module_has_a_docstring():
    modules = [path for package in (*PACKAGES, "bench") for path in (ROOT / package).rglob("*.py")]
    assert len(modules) > 30
    missing = [str(path.relative_to(ROOT)) for path in modules if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"
