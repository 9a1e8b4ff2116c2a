"""Every public name of the library says what it does and what it promises.

The library reference (docs/reference.md) is generated from these docstrings, so a public class,
function or method without one is a blank entry where a reader lands. "Public" is what a user is
pointed at: the names ``dispatchsim`` exports, each part's ``__all__``, the Engine's collaborators
(Store, Dispatcher), and the public methods and properties those classes define themselves.
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import sys
import types
from collections.abc import Iterator

import pytest

PARTS = ["dispatchsim.engine", "dispatchsim.scenarios", "dispatchsim.probe", "dispatchsim.mapping",
         "dispatchsim.providers"]
#: public classes that no ``__all__`` lists but that a reader of the engine meets
EXTRA = [("dispatchsim.engine.dispatcher", "Dispatcher")]


def _has_doc(obj: object) -> bool:
    doc = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)
    if not doc or not doc.strip():
        return False
    # a dataclass without a docstring gets its signature as one: that says nothing
    return not (inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("))


def _members(cls: type) -> Iterator[tuple[str, object]]:
    """Public methods and properties the class defines itself (inherited ones are checked where defined)."""
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, property):
            yield name, attr.fget
        elif isinstance(attr, (staticmethod, classmethod)):
            yield name, attr.__func__
        elif inspect.isfunction(attr):
            yield name, attr


def undocumented(named: list[tuple[str, object]]) -> list[str]:
    """Dotted names among ``named`` (and their public members) that have no docstring."""
    missing: list[str] = []
    seen: set[int] = set()
    for label, obj in named:
        if not (inspect.isclass(obj) or inspect.isfunction(obj)) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if not _has_doc(obj):
            missing.append(label)
        if inspect.isclass(obj) and not issubclass(obj, enum.Enum):
            missing += [f"{label}.{name}" for name, member in _members(obj) if not _has_doc(member)]
    return missing


def public_names() -> list[tuple[str, object]]:
    import dispatchsim

    named: list[tuple[str, object]] = [(f"dispatchsim.{n}", getattr(dispatchsim, n)) for n in sorted(dispatchsim._EXPORTS)]
    for part in PARTS:
        module = importlib.import_module(part)
        named += [(f"{part}.{n}", getattr(module, n)) for n in module.__all__]
    for part, name in EXTRA:
        named.append((f"{part}.{name}", getattr(importlib.import_module(part), name)))
    return named


def test_every_public_name_has_a_docstring() -> None:
    assert len(public_names()) > 100  # the walk really sees the library
    assert undocumented(public_names()) == []


@pytest.fixture
def synthetic() -> Iterator[types.ModuleType]:
    source = '''
from dataclasses import dataclass

def documented():
    """Says why."""

def bare():
    pass

@dataclass
class Plain:
    x: int

class Thing:
    """Has a docstring; one of its methods does not."""
    def told(self):
        """Says why."""
    def untold(self):
        pass
    @property
    def size(self):
        return 1
    def _private(self):
        pass
'''
    module = types.ModuleType("synthetic_docs")
    sys.modules[module.__name__] = module  # dataclasses look their module up while the class is built
    exec(compile(source, "synthetic_docs.py", "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]


def test_the_check_finds_what_lacks_a_docstring(synthetic: types.ModuleType) -> None:
    named = [(n, getattr(synthetic, n)) for n in ("documented", "bare", "Plain", "Thing")]
    assert undocumented(named) == ["bare", "Plain", "Thing.untold", "Thing.size"]


def test_deleting_a_real_docstring_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatchsim.engine import Engine

    assert "dispatchsim.Engine.run_until_idle" not in undocumented(public_names())
    monkeypatch.setattr(Engine.run_until_idle, "__doc__", None)
    assert "dispatchsim.Engine.run_until_idle" in undocumented(public_names())
