"""Lay the sources out as they install (dispatchsim/<part>/...) for mkdocstrings, which reads files.

The folders stay at the top of the repository and are mapped under the ``dispatchsim`` import root by
``[tool.setuptools.package-dir]`` in pyproject.toml; this copies them into ``build/docs-src`` by that
same mapping, so the API reference documents exactly what a user imports.
"""
from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(dest: Path) -> None:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        target = dest.joinpath(*package.split("."))
        shutil.copytree(ROOT / folder, target, ignore=ignore, dirs_exist_ok=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "docs-src")
