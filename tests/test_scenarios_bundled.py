"""The bundled catalogue from an installed package: `run --list`, `run NAME` from any directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dispatchsim.cli import main
from dispatchsim.scenarios import catalogue

ROOT = Path(__file__).resolve().parent.parent


def test_list_shows_one_line_per_bundled_scenario(capsys):
    assert main(["run", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    assert [line.split()[0] for line in lines] == names
    row = next(line for line in lines if line.startswith("ordered_head_outage "))
    assert "Ordered delivery" in row


def test_run_by_name_from_another_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "ordered_head_outage", "-q"]) == 0
    out = capsys.readouterr().out
    assert "PASS  ordered-head-outage  (bundled:ordered_head_outage.yaml, 7/7 expectations" in out
    assert str(ROOT) not in out  # no install path in a report


def test_dashed_name_and_yaml_suffix_resolve_to_the_same_file():
    assert catalogue.resolve("ordered-head-outage").source == catalogue.resolve("ordered_head_outage.yaml").source


def test_a_local_file_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ordered_head_outage").write_text((ROOT / "scenarios/happy_path_seed_payload.yaml").read_text())
    assert catalogue.resolve("ordered_head_outage").source == "ordered_head_outage"


def test_unknown_name_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "no_such_scenario"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["no_such_scenario: no such file or bundled scenario; "
                                "`dispatchsim run --list` shows the bundled scenarios",
                                "dispatchsim run: 1 problem in the scenario files; nothing was run"]
    assert main(["run"]) == 2
    assert "--list" in capsys.readouterr().err


def test_non_editable_install_lists_and_runs_bundled_scenarios(tmp_path):
    """Build a wheel from a copy of the sources (offline, no build isolation), install it with
    ``pip --target`` and run it from an unrelated directory: the YAML files must be in the wheel."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".venv", "__pycache__", "*.egg-info", "build", ".hypothesis", "*.db*")
    shutil.copytree(ROOT, src, ignore=ignore, symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                            str(src)], check=True, capture_output=True, text=True)
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr
    wheel = next((tmp_path / "dist").glob("dispatchsim-*.whl"))
    with zipfile.ZipFile(wheel) as zf:  # serve's console needs its templates and assets after a real install
        names = set(zf.namelist())
    assert {"dispatchsim/server/templates/login.html", "dispatchsim/server/static/console.css",
            "dispatchsim/server/static/reference.html", "dispatchsim/server/static/swagger_ui/swagger-ui-bundle.js",
            "dispatchsim/server/static/swagger_ui/LICENSE",
            "dispatchsim/engine/migrations/0001_initial.sql"} <= names, sorted(names)
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=60)

    where = run("-c", "import dispatchsim.scenarios as s; print(s.__file__)")
    assert where.stdout.strip().startswith(str(site)), where  # the installed copy, not the checkout
    listed = run("-m", "dispatchsim", "run", "--list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == len(list((ROOT / "scenarios").glob("*.yaml")))
    ran = run("-m", "dispatchsim", "run", "ordered_head_outage", "-q")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.startswith("PASS  ordered-head-outage  (bundled:ordered_head_outage.yaml")
    # the explorations testing.md runs ship too, and explore takes their names
    listed = run("-m", "dispatchsim", "explore", "--list")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == \
        sorted(p.stem for p in (ROOT / "scenarios" / "explore").glob("*.yaml")), listed.stdout + listed.stderr
    explored = run("-m", "dispatchsim", "explore", "svix_ordered_flapping", "--examples", "2", "--seed", "1", "-q")
    assert explored.returncode == 0, explored.stdout + explored.stderr
    assert explored.stdout.startswith("PASS  bundled:explore/svix_ordered_flapping.yaml: 2 examples (seed 1)")
