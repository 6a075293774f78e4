"""scripts/mutation_check.py's list matches the code: every original text is exactly once in its file and every
named test file exists. Cheap, so CI says at once when code moved under the list (running the mutations is not
part of CI: README "Tests that bite")."""
from __future__ import annotations

import importlib.util
import sys

from tests.conftest import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_mutation_still_finds_its_original_text_exactly_once():
    script = load_script()
    assert len(script.MUTATIONS) >= 25
    assert script.list_problems(script.MUTATIONS) == []


def test_a_mutation_whose_text_moved_is_reported():
    script = load_script()
    moved = script.Mutation("moved", "src/dltrain/trainer.py", "no such line", "x", ("tests/test_cli.py",), "")
    twice = script.Mutation("twice", "src/dltrain/trainer.py", "self.", "x", ("tests/no_such_test.py",), "")
    problems = script.list_problems([moved, twice])
    assert any("'no such line' occurs 0 times" in p for p in problems)
    assert any("occurs" in p and "twice" in p for p in problems) and any("no_such_test.py" in p for p in problems)
