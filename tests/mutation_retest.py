"""Worker of `scripts/mutation --retest` (tests/mutation_run.py): run in a module's work
directory (build/mutation/<module>/mutants, the package from src/), it imports pytest, the
package and the given test file once, then tests each mutant named on stdin in a forked child,
as mutmut does (MUTANT_UNDER_TEST names the mutant the trampolines run), and prints
"<pytest exit code> <mutant>" per mutant; a child over the time limit prints 36 (a timeout)."""

from __future__ import annotations

import os
import signal
import sys

import pytest


def main() -> None:
    test_files, limit = sys.argv[1:-1], int(sys.argv[-1])
    args = ["-x", "-q", "-p", "no:xdist", "-p", "no:randomly", "--rootdir=.", *test_files]
    pytest.main(["--collect-only", "-qq", *args])  # imports everything once, before the forks
    clean = os.fork()
    if clean == 0:  # the file must pass on the unmutated code, or a "kill" means nothing
        os.environ["MUTANT_UNDER_TEST"] = ""
        os._exit(int(pytest.main(args)))
    if os.waitstatus_to_exitcode(os.waitpid(clean, 0)[1]) != 0:
        raise SystemExit(f"{', '.join(test_files)} fail on the unmutated code")
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        child = os.fork()
        if child == 0:
            os.environ["MUTANT_UNDER_TEST"] = name
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            signal.alarm(limit)
            os._exit(int(pytest.main(args)))
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        print(f"{36 if code == -signal.SIGALRM else code} {name}", flush=True)


if __name__ == "__main__":
    main()
