"""Output paths of `dispatchsim run` are checked before the run: created when missing, refused when unusable."""
from __future__ import annotations

import json
from pathlib import Path

from dispatchsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = str(ROOT / "scenarios" / "happy_path_seed_payload.yaml")


def test_missing_output_folders_are_created(tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "deeper"
    code = main(["run", "-q", SCENARIO, "--json", str(out / "r.json"), "--events", str(out / "ev.jsonl"),
                 "--junit", str(out / "j.xml")])
    assert code == 0
    assert json.loads((out / "r.json").read_text())["ok"] is True
    assert (out / "ev.jsonl").read_text().count("\n") > 3
    assert "<testsuites" in (out / "j.xml").read_text()


def test_unusable_output_is_refused_before_running(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code = main(["run", "-q", SCENARIO, "--json", str(blocker / "r.json")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""  # nothing ran
    assert captured.err.startswith("dispatchsim run: --json ")
    assert "Traceback" not in captured.err
    code = main(["run", "-q", SCENARIO, "--json", str(tmp_path)])
    assert code == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_place_that_refuses_new_files_is_found_before_running(tmp_path: Path, capsys) -> None:
    """/sys takes no new file, from root either, whose permission bits allow everything: the check tries
    to write instead of reading permissions, so the run does not end in a lost report. Nothing is left behind."""
    for flag, value in (("--json", "/sys/dispatchsim-report.json"), ("--html", "/sys/kernel/report.html"),
                        ("--record", "/sys/kernel")):
        code = main(["run", "-q", SCENARIO, flag, value])
        captured = capsys.readouterr()
        assert code == 2, flag
        assert captured.out == ""  # nothing ran
        assert captured.err.startswith(f"dispatchsim run: {flag} {value}: cannot write"), captured.err
        assert "Traceback" not in captured.err
    # an existing report is checked by opening it to append: its content is untouched, and a new one is
    # created and removed again (the folder holds only what the run writes)
    old = tmp_path / "r.json"
    old.write_text("previous")
    assert main(["run", "-q", SCENARIO, "--events", str(old), "--json", "/sys/r.json"]) == 2
    assert old.read_text() == "previous"
    assert main(["run", "-q", SCENARIO, "--junit", str(tmp_path / "missing-folder" / "j.xml"),
                 "--events", str(old), "--json", str(tmp_path / "new.json")]) == 0
    assert old.read_text().count("\n") > 3 and sorted(p.name for p in tmp_path.iterdir()) == [
        "missing-folder", "new.json", "r.json"]
    assert [p.name for p in (tmp_path / "missing-folder").iterdir()] == ["j.xml"]


def test_a_file_marked_for_exploration_points_to_explore(capsys) -> None:
    code = main(["run", str(ROOT / "scenarios" / "explore" / "budget_ends_before_outage.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert "got {'between': " in err
    assert err.rstrip().endswith("run it with `dispatchsim explore FILE`")


def test_an_output_the_disk_refuses_is_one_line_and_the_others_are_written(tmp_path: Path, capsys) -> None:
    """/dev/full takes the open and refuses the write (ENOSPC), as a full disk does after a long run."""
    for flag in ("--json", "--events"):
        code = main(["run", "-q", SCENARIO, flag, "/dev/full", "--junit", str(tmp_path / "j.xml")])
        captured = capsys.readouterr()
        assert code == 2
        assert captured.out.startswith("PASS  happy-path-seed-payload")  # the run and its verdict are kept
        assert captured.err == f"dispatchsim run: {flag} /dev/full: cannot write (No space left on device)\n"
        assert "<testsuites" in (tmp_path / "j.xml").read_text()
        (tmp_path / "j.xml").unlink()


def test_a_closed_standard_output_ends_every_command_quietly(tmp_path: Path) -> None:
    """`dispatchsim demo | head -2`: the reader goes away. Unbuffered, the demo writes while the engine
    runs (in an event subscriber); buffered, `run --list` writes at the interpreter's last flush."""
    import os
    import subprocess
    import sys

    providers = tmp_path / "p.yaml"
    providers.write_text("endpoints:\n  crm:\n    behaviour: {status: 200}\n", encoding="utf-8")
    record = tmp_path / "record.jsonl"
    provider = ["provider", "--config", str(providers), "--record", str(record)]  # stops at its first line, record kept
    for argv, unbuffered in ((["demo"], "1"), (["run", "--list"], ""), (["mapping", "preview", _mapping(tmp_path)], ""),
                             (provider, "1")):
        read, write = os.pipe()
        os.close(read)  # every write to the pipe fails with EPIPE, as after `head` has exited
        try:
            done = subprocess.run([sys.executable, "-m", "dispatchsim", *argv], stdout=write, stderr=subprocess.PIPE,
                                  env={**os.environ, "PYTHONUNBUFFERED": unbuffered}, timeout=60)
        finally:
            os.close(write)
        assert (done.returncode, done.stderr.decode()) == (141, ""), argv
    assert record.exists()


def _mapping(tmp_path: Path) -> str:
    path = tmp_path / "m.yaml"
    path.write_text("fields:\n  task: id\n", encoding="utf-8")
    return str(path)


def test_two_scenarios_of_one_name_are_refused_before_their_files_overwrite_each_other(tmp_path: Path, capsys) -> None:
    text = Path(SCENARIO).read_text(encoding="utf-8")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.yaml").write_text(text, encoding="utf-8")
    a, b = tmp_path / "a" / "x.yaml", tmp_path / "b" / "x.yaml"
    out = tmp_path / "out"
    code = main(["run", "-q", str(a), str(b), "--events", str(out), "--record", str(out), "--plot", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""  # nothing ran
    assert captured.err == (f"dispatchsim run: {a} and {b} are both named 'happy-path-seed-payload': their files in "
                            "--events, --record, --plot would have one name (happy-path-seed-payload.*) and one would "
                            "overwrite the other; give one of them another name:\n")
    assert not out.exists()
    # names that differ but make one file name clash too; without per-scenario folders nothing clashes
    b.write_text(text.replace("name: happy-path-seed-payload", "name: happy path seed payload"), encoding="utf-8")
    assert main(["run", "-q", str(a), str(b), "--plot", str(out)]) == 2
    assert "named 'happy-path-seed-payload' and 'happy path seed payload'" in capsys.readouterr().err
    assert main(["run", "-q", str(a), str(b), "--json", str(tmp_path / "r.json")]) == 0


def test_a_reused_or_damaged_db_is_refused_saying_it_needs_a_new_file(tmp_path: Path, capsys) -> None:
    db = tmp_path / "run.db"
    assert main(["run", "-q", SCENARIO, "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["run", "-q", SCENARIO, "--db", str(db)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"dispatchsim run: {db}: already holds a dispatchsim database (an earlier run's); a "
                            "scenario starts from an empty one: give --db a new file\n")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(db.read_bytes()[:len(db.read_bytes()) // 2])
    assert main(["status", str(damaged)]) == 2
    status_says = capsys.readouterr().err.removeprefix("dispatchsim status: ").rstrip("\n")
    assert "damaged" in status_says
    assert main(["run", "-q", SCENARIO, "--db", str(damaged)]) == 2
    assert capsys.readouterr().err == f"dispatchsim run: {status_says}; --db needs a new file\n"
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty file is a new database
    assert main(["run", "-q", SCENARIO, "--db", str(empty)]) == 0
