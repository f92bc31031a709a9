"""``python -m safe_ops.guard``: run a program unchanged, with a guard around all of it, in every thread.

Like ``python -m pdb`` / ``cProfile``, the program sees the ``sys.argv``, ``__main__``, ``__file__``,
``sys.path[0]`` and exit code it would see run directly (modules, directories and zips run through runpy); the
guard's reports go to stderr (and ``--json FILE``).
"""
from __future__ import annotations

import atexit
import builtins
import importlib.machinery
import importlib.util
import io
import os
import runpy
import sys
import types
import zipfile
from typing import Callable, List, NamedTuple, Optional

from ._session import CLI_MODES, Session

PROG = "python -m safe_ops.guard"
USAGE = (
    f"usage: {PROG} [--mode raise|report|copy] [--json FILE] script.py [args ...]\n"
    f"       {PROG} [--mode raise|report|copy] [--json FILE] -m module [args ...]\n"
)
HELP = USAGE + """
Run a Python program with safe_ops.guard checking every in-place write against the values autograd saved for
backward, in every thread the program starts. The program runs unchanged: same sys.argv, __main__, sys.path[0]
and exit code. Reports go to stderr.

  --mode raise   (default) stop at the first unsafe write: its line and source, the op, the saved tensor, the
                 node that saved it and the line where that ran, and the fix; exit 1
  --mode report  run to the end with copy-on-write (so gradients are those of the out-of-place program),
                 report each distinct unsafe write once, and all of them at exit
  --mode copy    run with copy-on-write; say at exit how many copies (and bytes) it made
  --json FILE    also write the hazards and counts as JSON to FILE
  -m module      run a module as `python -m module` does
"""


class UsageError(Exception):
    pass


class Options(NamedTuple):
    mode: str
    json_path: Optional[str]
    script: Optional[str]  # a path (file, directory or zip with __main__.py), or None with `module`
    module: Optional[str]
    args: List[str]  # the program's arguments after the script or module


def parse(argv: List[str]) -> Optional[Options]:
    """The options before the program; everything after the script (or ``-m module``) is the program's.
    None for --help."""
    mode, json_path = "raise", None
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            return None
        if name in ("--mode", "--json"):
            if not eq:
                i += 1
                if i == len(argv):
                    raise UsageError(f"{name} needs a value")
                value = argv[i]
            if name == "--mode":
                if value not in CLI_MODES:
                    raise UsageError(f"unknown mode {value!r} (choose from {', '.join(CLI_MODES)})")
                mode = value
            else:
                json_path = value
        elif arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            module = arg[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
            if not module:
                raise UsageError("-m needs a module name")
            rest = argv[i + 1 + (arg == "-m"):]
            return Options(mode, json_path, None, module, rest)
        elif arg == "--":
            if i + 1 == len(argv):
                raise UsageError("no script to run")
            return Options(mode, json_path, argv[i + 1], None, argv[i + 2:])
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg!r}")
        else:
            return Options(mode, json_path, arg, None, argv[i + 1:])
        i += 1
    raise UsageError("no script to run")


def _exit_code(error: SystemExit) -> int:
    """The exit status Python gives ``sys.exit(code)``."""
    code = error.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run_source(filename: str) -> None:
    """Run a source file as Python runs ``python script.py``: in a fresh ``__main__`` module (which stays
    ``sys.modules["__main__"]``), ``__file__`` the absolute path, compiled without this module's __future__
    flags."""
    with io.open_code(filename) as f:
        source = f.read()
    code = compile(source, filename, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=filename, __builtins__=builtins, __cached__=None,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", filename))
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _program(opts: Options) -> Callable[[], object]:
    """Set sys.argv and sys.path[0] as Python would for the program, and return what runs it."""
    if opts.module is not None:
        try:
            found = importlib.util.find_spec(opts.module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UsageError(f"no module named {opts.module!r}")
        sys.argv = [opts.module, *opts.args]  # run_module puts the module's file in argv[0], as `python -m` does
        module = opts.module
        return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)
    script = opts.script
    assert script is not None
    if not os.path.exists(script):
        raise UsageError(f"cannot open {script!r}: no such file or directory")
    sys.argv = [script, *opts.args]
    if os.path.isdir(script) or zipfile.is_zipfile(script) or script.endswith(".pyc"):
        sys.path[0] = script  # runpy runs its __main__ (and puts it first on sys.path too)
        return lambda: runpy.run_path(script, run_name="__main__")
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    filename = os.path.join(os.getcwd(), script)  # what Python 3.9+ makes __file__: not normalised
    return lambda: _run_source(filename)


_TOOL_FILES = (os.path.abspath(runpy.__file__), os.path.dirname(os.path.abspath(__file__)) + os.sep)


def _print_uncaught(error: BaseException) -> None:
    """Print the traceback Python would, starting at the program's first frame (this tool's and runpy's frames
    left out), through ``sys.excepthook`` (which the program may have replaced)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_TOOL_FILES):
        tb = tb.tb_next
    sys.excepthook(type(error), error.with_traceback(tb), tb)  # (the hook prints the exception's own)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the program described by ``argv`` (default ``sys.argv[1:]``); the exit status. Usage errors: 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse(argv)
        if opts is None:
            sys.stdout.write(HELP)
            return 0
        program = _program(opts)
    except UsageError as error:
        sys.stderr.write(f"{USAGE}{PROG}: error: {error}\n")
        return 2
    session = Session(opts.mode, list(sys.argv), opts.json_path, cwd=os.getcwd())
    session.install_in_threads()
    # At interpreter exit, after Python has waited for the program's threads (and after its own atexit
    # functions, registered later): the summary covers everything the program ran.
    atexit.register(session.finish)
    guard = session.new_guard()
    code = 0
    try:
        with guard:
            program()
    except SystemExit as error:
        code = _exit_code(error)
    except BaseException as error:  # noqa: BLE001 - the program's uncaught exception, reported as Python would
        code = 130 if isinstance(error, KeyboardInterrupt) else 1
        if not session.is_reported(error):
            _print_uncaught(error)
    finally:
        session.release(guard)
    if session.stopped is not None and code == 0:  # raise mode found a hazard the program caught
        code = 1
    session.exit_code = code
    return code
