"""The architecture is a test: one import root, imports pointing one way, nothing importing bench."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dispatchsim

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("engine", "mapping", "providers", "scenarios", "probe", "server", "testing")


def _installed_layout(dest: Path) -> Path:
    """Copy the source folders into the layout they install as (dispatchsim/<part>/...)."""
    pkg = dest / "dispatchsim"
    shutil.copytree(ROOT / "dispatchsim", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for part in PARTS:
        shutil.copytree(ROOT / part, pkg / part, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(lint), "--config", str(tree / "pyproject.toml")], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_hold(tmp_path: Path) -> None:
    tree = _installed_layout(tmp_path)
    proc = _lint_imports(tree)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.count("KEPT") >= 4


@pytest.mark.parametrize("part, line, arrow", [
    ("mapping", "from dispatchsim.engine import Engine", "dispatchsim.mapping.bad -> dispatchsim.engine"),
    ("engine", "from dispatchsim.testing import invariants", "dispatchsim.engine.bad -> dispatchsim.testing"),
], ids=["mapping-imports-engine", "engine-imports-testing"])
def test_import_contracts_catch_a_violation(tmp_path: Path, part: str, line: str, arrow: str) -> None:
    """The contracts are not vacuous: a low layer importing a higher one (mapping importing the engine,
    the engine importing the testing API) breaks them."""
    tree = _installed_layout(tmp_path)
    (tree / "dispatchsim" / part / "bad.py").write_text(line + "\n")
    proc = _lint_imports(tree)
    assert proc.returncode != 0
    assert arrow in proc.stdout


def test_the_shared_bottom_may_not_import_a_part(tmp_path: Path) -> None:
    """The error root and the YAML reader sit below mapping and providers: importing one of them breaks."""
    tree = _installed_layout(tmp_path)
    (tree / "dispatchsim" / "errors.py").write_text(
        (tree / "dispatchsim" / "errors.py").read_text() + "\nfrom dispatchsim.providers import Recorder\n")
    proc = _lint_imports(tree)
    assert proc.returncode != 0
    assert "dispatchsim.errors -> dispatchsim.providers" in proc.stdout


def test_nothing_imports_bench() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+bench\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for part in (*PARTS, "dispatchsim", "tests")
                 for p in (ROOT / part).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_one_import_root_and_version_from_metadata() -> None:
    from importlib import metadata

    assert dispatchsim.__version__ == metadata.version("dispatchsim")
    dist = metadata.distribution("dispatchsim")
    top = {name.split("/")[0] for name in (dist.read_text("top_level.txt") or "").split()}
    assert top <= {"dispatchsim"}
    for name in ("Engine", "run_scenario", "run_probe", "compile_mapping"):
        assert name in dispatchsim.__all__
        assert getattr(dispatchsim, name) is not None


def test_python_dash_m_dispatchsim(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dispatchsim", "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"dispatchsim {dispatchsim.__version__}"


def test_a_users_own_engine_module_does_not_shadow_ours(tmp_path: Path) -> None:
    (tmp_path / "engine.py").write_text("raise SystemExit('the user module was imported')\n")
    (tmp_path / "scenarios.py").write_text("raise SystemExit('the user module was imported')\n")
    proc = subprocess.run([sys.executable, "-c", "from dispatchsim import run_scenario, Engine; print('ok')"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_every_sql_statement_lives_in_the_store() -> None:
    """SQL runs only in files whose path names the store: everyone else calls named store operations."""
    pattern = re.compile(r"\.(execute|executemany|executescript)\(")
    offenders = [str(p.relative_to(ROOT)) for part in (*PARTS, "dispatchsim")
                 for p in (ROOT / part).rglob("*.py")
                 if "store" not in str(p.relative_to(ROOT)) and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_server_uses_only_the_engines_public_names() -> None:
    """Serve mode imports ``dispatchsim.engine`` itself, never its modules (their insides may change)."""
    pattern = re.compile(r"^\s*(from|import)\s+dispatchsim\.engine\.\w+", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "server").rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
