"""Run the code blocks of a Markdown page, in order, in one scratch folder per page.

The conventions (also written down in docs/contributing.md):

* ```` ```console ```` — lines starting with ``$ `` are shell commands (a trailing ``\\`` continues one);
  the lines after a command, up to the next ``$ ``, are its expected output. ``…`` (or ``...``) inside a
  line matches any text; a line holding only ``…`` matches any number of lines. A command shown
  without output must exit 0.
* ```` ```sh ```` — every line that is not blank or a comment is a command that must exit 0.
* ```` ```python ```` — the block runs as a script and must exit 0.
* ```` ```yaml ```` / ```` ```json ```` whose first line is a comment ``# NAME`` (yaml) — or any block right
  after ``<!-- doc: file NAME -->`` — is written to ``NAME`` in the scratch folder, so later commands
  can use it.
* ``<!-- doc: skip REASON -->`` right before a block leaves it out; the reason is required and reported.
* A command ending in ``&`` starts in the background (a server); when it names ``--port N`` the page
  waits until 127.0.0.1:N accepts connections. Background commands are stopped (SIGTERM) at the end
  of the page. Exported variables (``export KEY=$(...)``) carry over to later commands of the page.
* The ports 8080 and 8090 shown on a page are placeholders: each page run replaces them (in commands,
  files and expected output) with free ports, so pages never collide with other servers.

The scratch folder starts with a copy of ``scenarios/``; commands run with the test venv first on PATH.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^```([a-zA-Z0-9_-]*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*doc:\s*(skip|file)\s+(.*?)\s*-->\s*$")
ELLIPSIS = ("…", "...")
PLACEHOLDER_PORTS = ("8080", "8090")


@dataclass(frozen=True)
class Block:
    source: str
    line: int          #: line of the opening fence
    lang: str
    text: str
    skip: str | None   #: the reason, when skipped
    file: str | None   #: write the block to this file instead of running it


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        text = "\n".join(lines[i + 1:j]) + "\n"
        skip = file = None
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        d = _DIRECTIVE.match(lines[k]) if k >= 0 else None
        if d and d.group(1) == "skip":
            skip = d.group(2)
        elif d and d.group(1) == "file":
            file = d.group(2)
        elif lang == "yaml" and text.startswith("# ") and text.split("\n", 1)[0].strip().endswith((".yaml", ".yml")):
            file = text.split("\n", 1)[0][2:].strip()
        out.append(Block(str(path), start + 1, lang, text, skip, file))
        i = j + 1
    return out


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Ellipsis-aware comparison of output lines (trailing spaces ignored)."""
    if not expected:
        return not actual
    head = expected[0].rstrip()
    if head in ELLIPSIS:
        return any(_matches(expected[1:], actual[n:]) for n in range(len(actual) + 1))
    if not actual:
        return False
    parts = [re.escape(p) for p in re.split(r"…|\.\.\.", head)]
    if not re.fullmatch(".*".join(parts), actual[0].rstrip()):
        return False
    return _matches(expected[1:], actual[1:])


def _console_steps(text: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    lines = text.rstrip("\n").split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise AssertionError(f"console block: expected a '$ ' command, got {lines[i]!r}")
        cmd = lines[i][2:]
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd[:-1] + " " + lines[i].strip()
        i += 1
        expected: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        steps.append((cmd, expected))
    return steps


@dataclass
class Page:
    """One page's scratch folder and the servers its commands started."""

    workdir: Path
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: dict[str, str] = field(default_factory=dict)

    def fill(self, text: str) -> str:
        """Replace the placeholder ports by this page's free ports."""
        for shown in PLACEHOLDER_PORTS:
            if shown not in self.ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    self.ports[shown] = str(s.getsockname()[1])
        return re.sub(r"(?<!\d)(" + "|".join(PLACEHOLDER_PORTS) + r")(?!\d)", lambda m: self.ports[m.group(1)], text)

    def close(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.background.clear()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the background command exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a real server started by a page, not simulated time
    raise AssertionError(f"nothing listened on 127.0.0.1:{port} within {deadline:.0f} s:\n{log.read_text()[-2000:]}")


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    env["HOME"] = str(workdir)
    # the test extra installs schemathesis (the contract fuzzer), whose pytest plugin patches Hypothesis
    # globally on load (a blank printer for failing examples): a reader's pytest has no such plugin
    env["PYTEST_ADDOPTS"] = "-p no:schemathesis"
    return env


_ENV_FILE = ".doc-env"


def _shell(cmd: str, page: Page, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one command in bash; variables it exports are kept for the next commands of the page."""
    env_file = shlex.quote(str(page.workdir / _ENV_FILE))
    script = f"[ -f {env_file} ] && . {env_file}\n{cmd}\nrc=$?\nexport -p > {env_file}\nexit $rc"
    if cmd.rstrip().endswith("&"):
        log = page.workdir / f"background-{len(page.background)}.log"
        env_prefix = f"[ -f {env_file} ] && . {env_file}\n"
        with log.open("wb") as out:
            proc = subprocess.Popen(["bash", "-c", env_prefix + "exec " + cmd.rstrip()[:-1]], cwd=page.workdir,
                                    env=_env(page.workdir), stdout=out, stderr=subprocess.STDOUT)
        page.background.append(proc)
        port = re.search(r"--port[ =](\d+)", cmd)
        if port:
            _wait_for_port(int(port.group(1)), proc, log)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return subprocess.run(["bash", "-c", script], cwd=page.workdir, env=_env(page.workdir), capture_output=True,
                          text=True, timeout=timeout)


def run_block(block: Block, page: Page, *, timeout: float = 240.0) -> None:
    """Run (or write) one block; AssertionError names the page, line and what differed."""
    where = f"{block.source}:{block.line}"
    workdir = page.workdir
    text = page.fill(block.text)
    if block.file:
        (workdir / block.file).parent.mkdir(parents=True, exist_ok=True)
        (workdir / block.file).write_text(text, encoding="utf-8")
        return
    if block.lang == "console":
        for cmd, expected in _console_steps(text):
            proc = _shell(cmd, page, timeout)
            actual = (proc.stdout + proc.stderr).rstrip("\n").split("\n") if (proc.stdout + proc.stderr) else []
            if expected:
                assert _matches(expected, actual), (
                    f"{where}: `{cmd}` printed:\n" + "\n".join(actual) + "\n--- the page shows:\n" + "\n".join(expected))
            else:
                assert proc.returncode == 0, f"{where}: `{cmd}` exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    elif block.lang == "sh":
        for line in text.splitlines():
            cmd = line.split(" #", 1)[0].strip()
            if not cmd or cmd.startswith("#"):
                continue
            proc = _shell(cmd, page, timeout)
            assert proc.returncode == 0, f"{where}: `{cmd}` exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    elif block.lang == "python":
        proc = subprocess.run([sys.executable, "-c", text], cwd=workdir, env=_env(workdir),
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{where}: the example failed:\n{proc.stderr[-3000:]}"
