"""The sample deployment (deploy/): what its image build may see.

deploy/compose.yaml builds deploy/Dockerfile with the repository as its context and ``COPY . /app``;
the docs tell the operator to write the database password to deploy/db_password.txt. The
``.dockerignore`` at the root decides what of the checkout reaches the image: read here with Docker's
rules (patterns relative to the context, ``*`` within one path segment, ``**`` any number of them,
``!`` takes a path back in, the last matching line wins, a folder's rule covers what it holds).
"""
from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        regex = "".join("(.*/)?" if part == "**/" else "[^/]*" if part == "*" else "[^/]" if part == "?"
                        else re.escape(part) for part in re.split(r"(\*\*/|\*|\?)", pattern))
        out.append((keep, re.compile(regex + r"\Z")))
    return out


def _left_out(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    out = False
    for keep, regex in rules:
        if any(regex.match(p) for p in prefixes):
            out = not keep
    return out


def test_the_image_build_sees_what_the_package_needs_and_no_secret() -> None:
    rules = _rules()
    for secret in ("deploy/db_password.txt", "deploy/serve.yaml", ".env", "dispatch.db", "serve.yaml",
                   ".git/config", ".venv/bin/python", "tests/pg.py", "engine/__pycache__/store.cpython-311.pyc"):
        assert _left_out(secret, rules), secret
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    needed = ["pyproject.toml", project["readme"], *project["license-files"]]
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    tracked = subprocess.run(["git", "ls-files", *folders.values()], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert len(tracked) > 100
    for path in needed + tracked:
        assert not _left_out(path, rules), path
