"""Regenerate a results file's markdown table and plot from its JSON (the table and plot: harness/report.py).

    python benchmarks/report.py benchmarks/results/<machine>.json     # writes <machine>.md and <machine>.png
"""
from __future__ import annotations

import json
import os
import sys

from harness.report import write


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip())
        return 2
    with open(argv[0]) as f:
        data = json.load(f)
    for path in write(data, os.path.splitext(argv[0])[0]):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
