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
regmgr/tasks under test_client_tasks.py, test_client_settle.py,
test_client_recovery.py, test_client_limits.py and test_api_vocabulary.py
(a real in-process registry on the memory store).
Not part of .ci/run: a run takes tens of minutes on a shared machine.

Each survivor is then written into the source itself (:func:`apply`) and
run under all of its group's tests: mutmut switches a mutant on only after
the package is imported, so mutants of import-time code never take effect
in its run. ``--report-only --tests-ref COMMIT`` does that again for a
finished run in ``--workdir`` with a later commit's tests. The figures, and
every remaining survivor with the reason it is equivalent, are in
``bench/mutation-results.md``.
"""
from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Optional, Union

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
               "tests/test_client_recovery.py", "tests/test_client_limits.py",
               "tests/test_api_vocabulary.py"], ["-k", "not zookeeper"]),
}
STATUSES = ("killed", "survived", "timeout", "suspicious", "no tests", "skipped",
            "segfault", "not checked", "caught by type check")


def export(ref: str, into: Path, *paths: str) -> None:
    """The tree of ``ref`` (tracked files only, or those under ``paths``) into ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref, *paths],
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


_Def = Union[ast.FunctionDef, ast.AsyncFunctionDef]


def _function(source: str, name: str, cls: Optional[str] = None) -> _Def:
    """The ``def`` of ``name`` in ``source`` (a method of class ``cls``, or top level)."""
    module = ast.parse(source)
    body = module.body
    if cls is not None:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    return next(n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                and n.name == name)


def apply(tree: Path, name: str) -> None:
    """Write mutant ``name`` into its source file, in place of its function or method.

    (``mutmut apply`` replaces the first function of that name in the file,
    which for ``put`` or ``__init__`` is often another class's.)
    """
    module, mangled = name.rsplit(".", 1)
    original = mangled[:mangled.rindex("__mutmut_")]
    cls, func = original[2:].split("ǁ") if original.startswith("xǁ") else (None, original[2:])
    path = tree / (module.replace(".", "/") + ".py")
    mutants = (tree / "mutants" / path.relative_to(tree)).read_text()
    node: _Def = next(n for n in ast.walk(ast.parse(mutants))
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.name == mangled)
    new = textwrap.dedent("\n".join(mutants.splitlines()[node.lineno - 1:node.end_lineno]))
    new = new.replace(f"def {mangled}(", f"def {func}(", 1)
    lines = path.read_text().splitlines()
    old = _function("\n".join(lines), func, cls)
    indent = lines[old.lineno - 1][:len(lines[old.lineno - 1]) - len(lines[old.lineno - 1].lstrip())]
    lines[old.lineno - 1:old.end_lineno] = textwrap.indent(new, indent).splitlines()
    path.write_text("\n".join(lines) + "\n")


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
        apply(tree, name)
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
    parser.add_argument("--tests-ref", help="recheck the survivors under the tests/ of this "
                        "commit (default: those of the run)")
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
    took = "an earlier run" if args.report_only else f"{minutes:.1f} min"
    print(f"\n{total} mutants in {took}: "
          + ", ".join(f"{by_status[s]} {s}" for s in STATUSES if by_status.get(s)))
    print(f"mutmut: {len(survivors)} of {total} survive = {100 * len(survivors) / total:.1f}%",
          flush=True)
    if args.tests_ref:
        export(args.tests_ref, work, "tests")
        tests = [t for t in GROUPS[args.group][1] if (work / t).exists()]
    started = time.monotonic()
    baseline = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly",
                               *tests, *pytest_args], cwd=work, capture_output=True, text=True)
    if baseline.returncode:
        print("the group's tests fail without a mutant:\n" + baseline.stdout[-3000:])
        return 1
    left = []
    for name in survivors:
        verdict = recheck(work, name, tests, pytest_args)
        print(f"  {verdict}: {name}", flush=True)
        if verdict == "survived":
            left.append(name)
    print(f"each written into the source under all of {' '.join(tests)}"
          f"{' at ' + args.tests_ref if args.tests_ref else ''}"
          f" ({(time.monotonic() - started) / 60:.1f} min): {len(survivors) - len(left)} killed")
    print(f"surviving: {len(left)} of {total} = {100 * len(left) / total:.1f}% "
          f"(of the {checked} that some test runs: {100 * len(left) / max(checked, 1):.1f}%)")
    for name in left:
        print(f"\n== {name}")
        if not args.no_diffs:
            print(diff_of(work, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
