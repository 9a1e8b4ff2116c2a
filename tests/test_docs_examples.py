"""The README and the docs are executed: every shell command and Python example on the pages runs here.

See tests/docs_harness.py for the conventions (expected output, ``…`` wildcards, files, skips).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from docs_harness import Page, blocks, run_block

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Pages whose examples take half a minute or more (explorations, long shrinks): in the slow suite.
SLOW_PAGES = {"docs/testing.md"}
RUNNABLE = ("console", "sh", "python")


@pytest.mark.timeout(300)  # a page runs real commands, servers and a real-clock probe one after another
@pytest.mark.parametrize("page", [
    pytest.param(p, id=str(p.relative_to(ROOT)), marks=[pytest.mark.slow] if str(p.relative_to(ROOT)) in SLOW_PAGES else [])
    for p in PAGES])
def test_page_examples_run_as_written(page: Path, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    scratch = Page(tmp_path)
    try:
        for block in blocks(page):
            if block.skip is not None:
                assert len(block.skip) >= 10, f"{block.source}:{block.line}: a skipped block needs a real reason"
                continue
            if block.lang in RUNNABLE or block.file:
                run_block(block, scratch)
    finally:
        scratch.close()


def test_the_harness_catches_a_wrong_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\n$ echo hello\ngoodbye\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="page.md:1"):
        for block in blocks(page):
            run_block(block, Page(tmp_path))


def test_the_harness_matches_ellipses_and_files(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```yaml\n# a.yaml\nx: 1\n```\n\n<!-- doc: skip shown only, never run -->\n```sh\nfalse\n```\n"
                    "```console\n$ cat a.yaml; echo one; echo two; echo three\n# a.yaml\nx: …\n…\nthree\n```\n",
                    encoding="utf-8")
    found = blocks(page)
    assert [b.file for b in found] == ["a.yaml", None, None]
    assert found[1].skip == "shown only, never run"
    scratch = Page(tmp_path)
    for block in found:
        if block.skip is None:
            run_block(block, scratch)


def test_the_harness_keeps_exports_and_runs_servers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\n$ export GREETING=$(echo hi)\n$ echo $GREETING there\nhi there\n"
                    "$ python -c 'import http.server as h, sys; h.test(HandlerClass=h.SimpleHTTPRequestHandler, port=int(sys.argv[2]), bind=\"127.0.0.1\")' --port 18765 &\n"
                    "$ python -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:18765/').status)\"\n"
                    "200\n```\n", encoding="utf-8")
    scratch = Page(tmp_path)
    try:
        for block in blocks(page):
            run_block(block, scratch)
        assert len(scratch.background) == 1 and scratch.background[0].poll() is None
    finally:
        scratch.close()
    assert scratch.background == []
