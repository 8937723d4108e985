"""The documentation's own files: its pytest example runs as shown, the version is one."""
import ast
import pathlib
import sys

from gevent import subprocess

import pytest

import regmgr

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_fixture_example_passes_as_a_user_runs_it(tmp_path):
    """docs/guides/testing.rst shows this file: it must pass with the plugin alone."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--rootdir", str(tmp_path), str(DOCS / "snippets" / "test_fixtures.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_version_is_the_installed_metadata(capsys):
    from importlib.metadata import version

    from regmgr.cli import main

    assert regmgr.__version__ == version("regmgr")
    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out == f"regmgr {regmgr.__version__}\n"


def python_blocks(path):
    """The Python examples of an .rst file: ``code-block:: python`` blocks and
    ``::`` blocks that start with an import."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for i, line in enumerate(lines):
        if not (line.strip() == ".. code-block:: python" or
                (line.endswith("::") and not line.lstrip().startswith(".."))):
            continue
        body = []
        for text in lines[i + 1:]:
            if text.strip() and not text.startswith("    "):
                break
            body.append(text[4:])
        code = "\n".join(body).strip() + "\n"
        if line.strip() == ".. code-block:: python" or code.startswith(("from ", "import ")):
            found.append(code)
    return found


EXAMPLES_ON_THE_DEFAULT_REGISTRY = [
    (path, code)
    for path in (DOCS.parent / "README.rst", DOCS / "guides" / "gevent-app.rst")
    for code in python_blocks(path) if 'TCP("127.0.0.1")' in code
]


@pytest.mark.parametrize("path, code", EXAMPLES_ON_THE_DEFAULT_REGISTRY,
                         ids=[path.name for path, _ in EXAMPLES_ON_THE_DEFAULT_REGISTRY])
def test_example_runs_against_a_registry(path, code, registry_server, tmp_path):
    """The example as written; only the registry's ports are this test's own.

    The default ports 6701-6703 may be taken on a shared machine, so
    ``TCP("127.0.0.1")`` becomes a TCP of the same host on the test's ports.
    """
    ours = (f'TCP("127.0.0.1", new_port={registry_server.new_port}, '
            f'find_port={registry_server.find_port}, event_port={registry_server.event_port})')
    script = tmp_path / "example.py"
    script.write_text(code.replace('TCP("127.0.0.1")', ours))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # The last dict printed is the lookup's answer; whether it lists the example's
    # own service depends on which of two connections the registry served first.
    found = ast.literal_eval([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert isinstance(found, dict) and set(found) <= {"tcp!10.0.0.5!8080"}


def test_the_readme_and_the_gevent_guide_have_examples_to_run():
    assert {path.name for path, _ in EXAMPLES_ON_THE_DEFAULT_REGISTRY} == {"README.rst",
                                                                          "gevent-app.rst"}


def test_the_bench_page_reads_what_the_bench_prints():
    """docs/bench-results.md is python -m bench's output as it is: the docs'
    reader must take the table bench.harness.table() makes, and the saved one."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import benchtable
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    from bench.harness import Row, table

    rows = [Row("B1", "restore", "tcp", [0.2, 0.3], "s", goal="<= 0.5 s", met=True),
            Row("B1", "restore", "styx", [0.1, 0.9], "s", goal="<= 0.5 s", met=False, note="slow")]
    header, parsed = benchtable.parse(table(rows, "`python -m bench`: 2 CPUs"))
    assert header == "`python -m bench`: 2 CPUs"
    [[line]] = benchtable.pivot(parsed).values()
    cells = dict(zip(benchtable.COLUMNS, line))
    assert (cells["tcp median"], cells["styx p99"]) == ("0.25", "0.9")
    assert cells["goal"] == "<= 0.5 s; tcp met; styx MISSED" and cells["notes"] == "styx: slow"
    header, saved = benchtable.parse((DOCS / "bench-results.md").read_text(encoding="utf-8"))
    assert header.startswith("`python -m bench") and {"B1", "B6"} <= set(benchtable.pivot(saved))
