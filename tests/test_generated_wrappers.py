"""safe_ops/_generated.py is what csrc/codegen/python_wrappers.py writes from the declarations today: a change to
the declarations or the generator without `make generate` fails here."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "csrc", "codegen"))

import python_wrappers  # noqa: E402
from generate import load_declarations  # noqa: E402


def test_generated_python_wrappers_are_current():
    with open(python_wrappers.OUTPUT) as f:
        committed = f.read()
    assert committed == python_wrappers.render(load_declarations()), (
        "safe_ops/_generated.py is stale: run `make generate` and commit the result")


def test_generated_lines_fit_the_linter():
    with open(python_wrappers.OUTPUT) as f:
        lines = f.read().splitlines()
    assert all(len(line) <= python_wrappers.LINE_LIMIT for line in lines)
