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


def test_a_file_marked_for_exploration_points_to_explore(capsys) -> None:
    code = main(["run", str(ROOT / "scenarios" / "explore" / "budget_ends_before_outage.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert "got {'between': " in err
    assert err.rstrip().endswith("run it with `dispatchsim explore FILE`")
