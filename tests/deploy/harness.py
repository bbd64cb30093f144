"""harness.py - the tiny test runner of tests/deploy (no pytest needed).

    python3 tests/deploy/harness.py [test_file.py ...]

Runs every top-level function named test_* of each file (all test_*.py
here when none is given), in file order.  A test passes by returning, fails
by raising (AssertionError or anything else), and is skipped by raising
Skip (or MissingTool, which fails instead when CI=true: CI's machine
installs every tool, so a missing one there is a broken setup, not a
reason to pass quietly).  One line per test ("ok", "FAIL", "skip"),
failure details indented below it, and a last line the shell script adds
up:

    deploy-tests: P passed, F failed, S skipped
"""
import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


class Skip(Exception):
    """Raised by a test that cannot run here (a tool or a build missing)."""


class MissingTool(Skip):
    """A Skip because a tool is not installed: a failure when CI=true."""


def need_tool(name):
    """The path of the program `name`; raises MissingTool when there is none."""
    import shutil
    path = shutil.which(name)
    if not path:
        raise MissingTool(f"{name} is not installed")
    return path


def check(cond, msg):
    """assert that also works under python -O."""
    if not cond:
        raise AssertionError(msg)


def fail_list(problems, what):
    """Fails with every problem listed, one per line, when there are any."""
    if problems:
        raise AssertionError(f"{len(problems)} {what}:\n" + "\n".join(
            f"  - {p}" for p in problems))


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv):
    files = [Path(a).resolve() for a in argv] or sorted(HERE.glob("test_*.py"))
    sys.path.insert(0, str(HERE))
    passed = failed = skipped = 0
    for f in files:
        try:
            mod = _load(f)
        except Exception:  # a broken test file is a failure, not a crash
            failed += 1
            print(f"FAIL {f.name}: cannot import\n" + _indent(traceback.format_exc()))
            continue
        tests = [(n, fn) for n, fn in vars(mod).items()
                 if n.startswith("test_") and callable(fn)]
        tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
        for name, fn in tests:
            label = f"{f.stem}::{name}"
            t0 = time.monotonic()
            try:
                fn()
            except MissingTool as e:
                if os.environ.get("CI") == "true":
                    failed += 1
                    print(f"FAIL {label}\n    {e} (a failure in CI, which installs every tool)")
                else:
                    skipped += 1
                    print(f"skip {label}: {e}")
            except Skip as e:
                skipped += 1
                print(f"skip {label}: {e}")
            except Exception as e:  # noqa: BLE001 - report and go on
                failed += 1
                detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
                print(f"FAIL {label}\n{_indent(detail)}")
            else:
                passed += 1
                print(f"ok   {label} ({time.monotonic() - t0:.1f}s)")
            sys.stdout.flush()
    print(f"deploy-tests: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


def _indent(text):
    return "\n".join("    " + line for line in text.rstrip().splitlines())


if __name__ == "__main__":
    # The tests import `harness` (for Skip): make that this very module, or
    # a Skip they raise would be another class than the one caught here.
    sys.modules["harness"] = sys.modules["__main__"]
    sys.exit(main(sys.argv[1:]))
