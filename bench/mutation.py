"""Mutation score of regmgr's sans-I/O core and its tasks, measured with mutmut.

    pip install -e '.[test,mutation]'
    python bench/mutation.py --group core                # the committed tree (HEAD)
    python bench/mutation.py --group tasks --ref 935c1d9 # the tree and tests of a commit

It exports the tree at ``--ref`` into a scratch directory (the work tree is
never touched), adds the ``[mutmut]`` settings below to that copy's
setup.cfg, runs ``mutmut run`` there and prints the score and every
surviving mutant with its diff. mutmut runs, for each mutant, only the
tests that call the mutated function, so a run takes minutes, not hours;
``--max-children`` bounds the CPUs it takes (the machine is shared).

Two groups, each its own run: ``core`` mutates wire.py, ninep.py,
server/state.py and backoff.py under their unit tests; ``tasks`` mutates
regmgr/tasks under test_client_tasks.py, test_client_settle.py and
test_client_recovery.py (a real in-process registry on the memory store).
Not part of .ci/run: a run takes tens of minutes on a shared machine.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (files mutated, the fast tests that exercise them). The sans-I/O core is
# judged by its own unit tests only: the client tests call wire.py too, but
# through sockets, at a hundred times the cost per mutant.
GROUPS = {
    "core": (["regmgr/wire.py", "regmgr/ninep.py", "regmgr/server/state.py", "regmgr/backoff.py"],
             ["tests/test_wire.py", "tests/test_ninep.py", "tests/test_server_state.py",
              "tests/test_server_styxproto.py", "tests/test_server_index.py",
              "tests/test_backoff.py"], []),
    # The tasks never see the registry's store: their tests run on the memory
    # store only (a ZooKeeper ensemble is three JVMs started for every mutant).
    "tasks": (["regmgr/tasks/*"],
              ["tests/test_client_tasks.py", "tests/test_client_settle.py",
               "tests/test_client_recovery.py"], ["-k", "not zookeeper"]),
}
STATUSES = ("killed", "survived", "timeout", "suspicious", "no tests", "skipped",
            "segfault", "not checked", "caught by type check")


def export(ref: str, into: Path) -> None:
    """The tree of ``ref`` (tracked files only) into ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref],
                             check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(archive)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(into, filter="data")


def configure(tree: Path, mutated: list[str], tests: list[str], pytest_args: list[str]
              ) -> list[str]:
    """Append the [mutmut] section; return the test files that exist at this ref."""
    tests = [t for t in tests if (tree / t).exists()]
    lines = ["", "[mutmut]", "source_paths = regmgr", "only_mutate ="]
    lines += [f"    {pattern}" for pattern in mutated]
    lines += ["pytest_add_cli_args_test_selection ="] + [f"    {t}" for t in tests]
    if pytest_args:  # one argument per line
        lines += ["pytest_add_cli_args ="] + [f"    {a}" for a in pytest_args]
    # gevent's hub does not survive a plain fork of a process that ran the suite.
    lines += ["process_isolation = forkserver", "use_git_change_detection = false",
              "debug = true", ""]
    with open(tree / "setup.cfg", "a") as cfg:
        cfg.write("\n".join(lines))
    return tests


def counts(tree: Path) -> tuple[dict[str, int], list[str]]:
    """Mutants per status, and the names of the survivors (from ``mutmut results``)."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                         cwd=tree, capture_output=True, text=True).stdout
    by_status: dict[str, int] = {}
    survivors = []
    for line in out.splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if not match:
            continue
        name, status = match.groups()
        by_status[status] = by_status.get(status, 0) + 1
        if status == "survived":
            survivors.append(name)
    return by_status, survivors


def recheck(tree: Path, name: str, tests: list[str], pytest_args: list[str],
            timeout: float = 900) -> str:
    """Run all of the group's tests on the source with mutant ``name`` written into it.

    mutmut switches a mutant on in a process that has already imported the
    package, so a mutant of code that runs at import time (a class decorator,
    a module-level object's constructor) is never active in its run and
    "survives". Written into the file itself it is; the verdict is the
    suite's: "killed" (pytest failed, or ran past ``timeout``) or "survived".
    """
    sources = {p: p.read_bytes() for p in (tree / "regmgr").rglob("*.py")}
    try:
        if subprocess.run([sys.executable, "-m", "mutmut", "apply", name], cwd=tree,
                          capture_output=True).returncode:
            return "survived"  # cannot be written in: mutmut's verdict stands
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly",
                                  *tests, *pytest_args], cwd=tree, capture_output=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            return "killed"
        return "survived" if run.returncode == 0 else "killed"
    finally:
        for path, text in sources.items():
            if path.read_bytes() != text:
                path.write_bytes(text)


def diff_of(tree: Path, name: str) -> str:
    """The lines mutant ``name`` changes, as ``mutmut show`` gives them."""
    diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=tree,
                          capture_output=True, text=True).stdout
    return "\n".join(line for line in diff.splitlines()
                     if line.startswith(("+", "-")) and not line.startswith(("+++", "---")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="HEAD", help="commit to measure (default HEAD)")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep the scratch tree here")
    parser.add_argument("--no-diffs", action="store_true", help="list survivors without diffs")
    parser.add_argument("--group", choices=sorted(GROUPS), required=True,
                        help="core: wire, ninep, server/state, backoff; tasks: regmgr/tasks")
    parser.add_argument("--report-only", action="store_true",
                        help="no new run: report (and recheck) the one already in --workdir")
    args = parser.parse_args()
    if args.report_only and not args.workdir:
        parser.error("--report-only needs --workdir")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="regmgr-mutation-"))
    mutated, tests, pytest_args = GROUPS[args.group]
    minutes = 0.0
    if args.report_only:
        tests = [t for t in tests if (work / t).exists()]
    else:
        if work.exists() and any(work.iterdir()):
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        export(args.ref, work)
        tests = configure(work, mutated, tests, pytest_args)
        print(f"mutating {', '.join(mutated)} at {args.ref} in {work}\n"
              f"tests: {' '.join(tests + pytest_args)}", flush=True)
        started = time.monotonic()
        with open(work / "mutmut-run.log", "w") as log:  # pytest's output of every run
            subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children",
                            str(args.max_children)], cwd=work, stdout=log,
                           stderr=subprocess.STDOUT)
        minutes = (time.monotonic() - started) / 60
    by_status, survivors = counts(work)
    total = sum(by_status.values())
    if not total:
        print("mutmut reported no mutants: see", work / "mutmut-run.log")
        return 1
    checked = total - by_status.get("no tests", 0)
    print(f"\n{total} mutants in {minutes:.1f} min: "
          + ", ".join(f"{by_status[s]} {s}" for s in STATUSES if by_status.get(s)))
    print(f"mutmut: {len(survivors)} of {total} survive = {100 * len(survivors) / total:.1f}%",
          flush=True)
    started = time.monotonic()
    verdicts = {name: recheck(work, name, tests, pytest_args) for name in survivors}
    left = [name for name in survivors if verdicts[name] == "survived"]
    print(f"each written into the source under all of {' '.join(tests)}"
          f" ({(time.monotonic() - started) / 60:.1f} min): "
          f"{len(survivors) - len(left)} killed (import-time code)")
    print(f"surviving: {len(left)} of {total} = {100 * len(left) / total:.1f}% "
          f"(of the {checked} that some test runs: {100 * len(left) / max(checked, 1):.1f}%)")
    for name in left:
        print(f"\n== {name}")
        if not args.no_diffs:
            print(diff_of(work, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
