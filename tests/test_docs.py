"""The documentation's own files: its pytest example runs as shown, the version is one."""
import pathlib
import sys

from gevent import subprocess

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
