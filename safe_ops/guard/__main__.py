"""``python -m safe_ops.guard [--mode raise|report|copy] [--json FILE] script.py | -m module [args ...]``."""
import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
