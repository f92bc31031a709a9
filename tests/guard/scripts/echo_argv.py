"""For test_guard_cli.py: prints what a program sees of how it was run, then exits with the status given
(`python echo_argv.py [args...] --exit N`); `--raise` raises instead."""
import json
import sys

if __name__ == "__main__":
    print(json.dumps({
        "argv": sys.argv,
        "name": __name__,
        "file": __file__,
        "path0": sys.path[0],
        "main_is_this_module": sys.modules["__main__"].__dict__ is globals(),
    }))
    if "--raise" in sys.argv:
        raise ValueError("raised by echo_argv")
    sys.exit(int(sys.argv[sys.argv.index("--exit") + 1]) if "--exit" in sys.argv else 0)
