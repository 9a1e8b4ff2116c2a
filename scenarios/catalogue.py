"""The bundled catalogue: scenario files shipped inside the package, found by name from any directory.

The YAML files live next to this module (package data), so an installed package, editable or not,
can list and run them without a checkout: ``dispatchsim run --list``, ``dispatchsim run NAME``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dispatchsim.yamlfile import load_yaml

from .errors import ScenarioError
from .spec import Scenario, load_scenario, parse_scenario

#: prefix of the ``source`` of a bundled scenario: reports name the file, never a machine's install path
BUNDLED = "bundled:"


@dataclass(frozen=True)
class Entry:
    """One bundled scenario as ``--list`` shows it."""

    name: str  #: the file's stem, what ``dispatchsim run NAME`` takes
    summary: str  #: the first sentence of its description


def _files() -> dict[str, object]:
    root = resources.files("dispatchsim.scenarios")
    return {item.name[:-5]: item for item in root.iterdir() if item.name.endswith(".yaml")}


def entries() -> list[Entry]:
    """Every bundled scenario, by name; the summary is read without validating the whole file."""
    out = []
    for name, item in sorted(_files().items()):
        text = item.read_text(encoding="utf-8")  # type: ignore[attr-defined]
        data = load_yaml(text, source=f"{BUNDLED}{name}.yaml")[0] or {}
        text = " ".join(str(data.get("description") or "").split())
        out.append(Entry(name=name, summary=_first_sentence(text)))
    return out


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.:;])(\s|$)", text)
    return (m.group(1) if m else text).rstrip(":;")


def resolve(arg: str) -> Scenario:
    """A path to a file, else the name of a bundled scenario (``ordered_head_outage`` or
    ``ordered-head-outage``, with or without ``.yaml``). A file in the current directory wins."""
    if Path(arg).is_file():
        return load_scenario(arg)
    stem = arg[:-5] if arg.endswith(".yaml") else arg
    item = _files().get(stem) or _files().get(stem.replace("-", "_"))
    if item is None:
        looks_like_path = "/" in arg or arg.endswith((".yaml", ".yml"))
        what = "no such file" if looks_like_path else "no such file or bundled scenario"
        raise ScenarioError(f"{what}; `dispatchsim run --list` shows the bundled scenarios", source=arg)
    source = f"{BUNDLED}{item.name}"  # type: ignore[attr-defined]
    with resources.as_file(item) as path:  # type: ignore[arg-type]
        return parse_scenario(path.read_text(encoding="utf-8"), source=source, base_dir=path.parent)
