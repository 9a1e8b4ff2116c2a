"""The bundled catalogue: scenario files shipped inside the package, found by name from any directory.

The YAML files live next to this module (package data), so an installed package, editable or not,
can list and run them without a checkout: ``dispatchsim run --list``, ``dispatchsim run NAME``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dispatchsim.yamlfile import is_file, load_yaml

from .errors import ScenarioError
from .spec import Scenario, load_scenario, parse_scenario

#: prefix of the ``source`` of a bundled scenario: reports name the file, never a machine's install path
BUNDLED = "bundled:"


@dataclass(frozen=True)
class Entry:
    """One bundled scenario as ``--list`` shows it."""

    name: str  #: the file's stem, what ``dispatchsim run NAME`` takes
    summary: str  #: the first sentence of its description


#: the folder of the bundled files ``dispatchsim explore`` takes (scenarios with marked values)
EXPLORE = "explore"


def _files(folder: str | None = None) -> dict[str, object]:
    root = resources.files("dispatchsim.scenarios")
    if folder is not None:
        root = root.joinpath(folder)
    return {item.name[:-5]: item for item in root.iterdir() if item.name.endswith(".yaml")}


def entries(folder: str | None = None) -> list[Entry]:
    """Every bundled scenario (``folder=EXPLORE``: every bundled exploration), by name; the summary is
    read without validating the whole file."""
    out = []
    prefix = BUNDLED + (f"{folder}/" if folder else "")
    for name, item in sorted(_files(folder).items()):
        text = item.read_text(encoding="utf-8")  # type: ignore[attr-defined]
        data = load_yaml(text, source=f"{prefix}{name}.yaml")[0] or {}
        text = " ".join(str(data.get("description") or "").split())
        out.append(Entry(name=name, summary=_first_sentence(text)))
    return out


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.:;?])(\s|$)", text)
    return (m.group(1) if m else text).rstrip(":;")


def resolve(arg: str) -> Scenario:
    """A path to a file, else the name of a bundled scenario (``ordered_head_outage`` or
    ``ordered-head-outage``, with or without ``.yaml``). A file in the current directory wins."""
    if is_file(arg, error=ScenarioError):
        return load_scenario(arg)
    text, source, base_dir = bundled(arg)
    return parse_scenario(text, source=source, base_dir=base_dir)


def bundled(arg: str, folder: str | None = None) -> tuple[str, str, Path]:
    """The text, ``source`` and folder of the bundled file ``arg`` names (see :func:`resolve`); in
    ``folder=EXPLORE``, of a bundled exploration. ScenarioError saying where the names are listed."""
    stem = arg[:-5] if arg.endswith(".yaml") else arg
    files = _files(folder)
    item = files.get(stem) or files.get(stem.replace("-", "_"))
    if item is None:
        looks_like_path = "/" in arg or arg.endswith((".yaml", ".yml"))
        kind = "bundled exploration" if folder == EXPLORE else "bundled scenario"
        what = "no such file" if looks_like_path else f"no such file or {kind}"
        if Path(arg).is_dir():  # it exists: "no such file" sent people looking for a typo
            what = "is a directory, not a scenario file"
        elif Path(arg).exists():
            what = "not a regular file"
        command = "explore" if folder == EXPLORE else "run"
        raise ScenarioError(f"{what}; `dispatchsim {command} --list` shows the {kind}s", source=arg)
    source = f"{BUNDLED}{folder + '/' if folder else ''}{item.name}"  # type: ignore[attr-defined]
    with resources.as_file(item) as path:  # type: ignore[arg-type]
        return path.read_text(encoding="utf-8"), source, path.parent
