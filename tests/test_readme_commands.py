"""Every shell command in README.rst (and docs/*.rst) runs as written.

The commands name the default ports (6701-6703, Styx 6675) and fixed
addresses such as 127.0.0.1:8000, which other tests and programs on a
shared machine may hold. So each test runs in a network namespace of its
own (``unshare --net``: it re-runs itself under pytest inside one, with the
loopback up and nothing else): there the documented ports are free and no
traffic leaves. The commands are typed one line at a time into one
``bash`` (background jobs, ``kill %1`` and comments as a reader's shell
would have them), with ``HOME`` a fresh directory, and waited on as a
reader would wait: for what the line starts to be up, or for it to exit.
Each foreground command must exit 0.

The only commands not run as written are listed in :data:`NOT_RUN`, each
with the reason and what runs instead. Commands written with placeholders
(``NAME``, ``attr value``, ``USER``) run in a scenario of :data:`SCENARIOS`
that fills them, and filling them is the only change.
"""
from __future__ import annotations

import fcntl
import functools
import os
import re
import shlex
import shutil
import signal
import site
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doccommands import Block, blocks, command_of, inline_commands
from regmgr.testing import find_over_tcp

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.rst", *sorted((ROOT / "docs").rglob("*.rst"))]
NETNS_ENV = "REGMGR_DOCTEST_IN_NETNS"
STEP_TIMEOUT = 60.0
PIP_USER_CONFIGS = (".config/pip/pip.conf", ".pip/pip.conf")
DEFAULT_FIND = ("127.0.0.1", 6702)

#: Commands not run as written, with why, and what covers them instead.
NOT_RUN = {
    "pip install -e '.[test]' && python -m pytest -q":
        "it is this test suite: .ci/run runs it as written (asserted below)",
    "python -m bench":
        "takes about 500 s; tests/test_bench_smoke.py runs the harness on a subset",
    "python -m bench --quick":
        "takes over a minute on 2 shared cores; tests/test_bench_smoke.py runs a subset",
    "python -m bench -s B1,B2 -t tcp":
        "full-size scenarios take minutes; tests/test_bench_smoke.py runs the harness",
    "python -m bench.faults":
        "about 10 minutes, as root, in network namespaces; tests/test_faults_bench.py runs "
        "its --quick form on one transport",
    "python -m bench > docs/bench-results.md":
        "about 8 minutes, and it rewrites a file of the tree",
    "pip install sphinx furo sphinx-argparse":
        "needs the network (furo and sphinx-argparse are not on this machine's index)",
    "pip install -e . sphinx furo sphinx-argparse": "the same",
    "python -m sphinx docs docs/_build/html": "needs the packages above",
    "python -m sphinx -W -b html docs docs/_build/html": "needs the packages above",
    "regmgr serve --host 0.0.0.0 --styx-port 6675 --store zookeeper://zk1:2181,zk2:2181,zk3:2181/regmgr":
        "needs a ZooKeeper ensemble on hosts zk1-zk3: tests/test_zk_failover.py runs "
        "regmgr serve --store zookeeper://... (three of them) against a real three-server ensemble",
    "pip install 'regmgr[zookeeper]'":
        "installs regmgr from the package index; .ci/run installs kazoo the same way (test extra)",
    "pip install -e '.[test,mutation]'":
        "installs the test and mutation extras: .ci/run installs the test extra the same way",
    "python bench/mutation.py --group core --max-children 1":
        "tens of minutes of mutation testing; its figures are in bench/mutation-results.md",
    "python bench/mutation.py --group tasks --max-children 1": "the same",
    "python -m regmgr": "another name for the regmgr command (alone it prints its usage): "
                        "test_python_m_regmgr_is_the_regmgr_command checks the two agree",
}

#: Commands written with placeholders, and what fills them in their scenario.
PLACEHOLDERS = ("NAME", "attr value", "USER")
SCENARIOS = {
    "styx": (["regmgr serve --styx-port 6675",
              "regmgr register NAME attr value --transport styx",
              "regmgr unregister NAME --transport styx --user USER"],
             {"NAME": "'tcp!10.0.0.5!8080'", "attr value": "persist 1", "USER": "none"}),
    "prose": (["regmgr register NAME attr value", "regmgr find attr value",
               "regmgr watch attr value"],
              {"NAME": "'tcp!10.0.0.5!8080'", "attr value": "proto http"}),
}


# --- running inside a network namespace of its own -------------------------

def _loopback_up() -> None:
    """``ip link set lo up`` without needing iproute2."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def _unshare_command() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("these tests need unshare(1) (util-linux) for a network namespace")
    return [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user",
                                                          "--net"]


def in_own_netns(test):
    """Run ``test`` in a pytest of its own inside a fresh network namespace."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if os.environ.get(NETNS_ENV) == "1":
            _loopback_up()
            return test(*args, **kwargs)
        node = os.environ["PYTEST_CURRENT_TEST"].rsplit(" (", 1)[0]
        env = dict(os.environ, **{NETNS_ENV: "1"})
        env.pop("PYTEST_CURRENT_TEST", None)
        try:
            done = subprocess.run(
                [*_unshare_command(), sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
                 "-p", "no:cacheprovider", node],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as err:
            pytest.fail(f"{node} in its namespace did not finish in 600 s:\n{err.stdout}")
        if done.returncode != 0:
            pytest.fail(f"{node} in its namespace failed:\n{done.stdout}\n{done.stderr}",
                        pytrace=False)
    return wrapper


# --- a reader's shell -------------------------------------------------------

def listed() -> dict[str, dict[str, str]]:
    try:
        return find_over_tcp(*DEFAULT_FIND, timeout=5)
    except OSError:
        return {}


def wait_for(predicate, what: str, shell: "Shell", timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}\n--- shell output ---\n{shell.output()}")
        time.sleep(0.05)


def accepting(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            return [int(child) for child in file.read().split()]
    except FileNotFoundError:
        return []


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


class Shell:
    """One ``bash`` reading the lines as they are typed, output in a file.

    After a foreground line it echoes a marker with the exit status, so the
    test knows when the line is done and how it ended.
    """

    def __init__(self, cwd: Path, home: Path, path_prefix: str = "") -> None:
        self.log = home / "shell.log"
        env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(home),
                   PIP_RETRIES="0", PIP_TIMEOUT="5")
        env.pop(NETNS_ENV, None)
        # This environment's scripts first, as in an activated virtualenv.
        prefixes = [path_prefix, os.path.dirname(sys.executable)]
        env["PATH"] = os.pathsep.join([p for p in prefixes if p] + [env.get("PATH", "")])
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                     start_new_session=True)
        self._steps = 0

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def run(self, line: str, *, until=None, stop=signal.SIGINT) -> str:
        """Type a foreground ``line`` and wait for it to exit 0; return its output.

        A command that runs until stopped (``until`` given) gets ``stop``
        once ``until(output so far)`` holds.
        """
        self._steps += 1
        marker = f"__step {self._steps} exit "
        start = len(self.output())
        before = set(children(self.proc.pid))  # the jobs already running
        self.type(line)
        self.type(f'echo "{marker}$?"')
        if until is not None:
            wait_for(lambda: until(self.output()[start:]), f"{line!r} to show its output", self)
            targets = set(children(self.proc.pid)) - before
            assert targets, f"no process under the shell for {line!r}"
            for pid in targets:
                os.kill(pid, stop)
        wait_for(lambda: marker in self.output()[start:], f"{line!r} to exit", self)
        text = self.output()[start:]
        status = int(re.search(re.escape(marker) + r"(\d+)", text).group(1))
        assert status == 0, f"{line!r} exited {status}:\n{text}"
        return text[:text.index(marker)]

    def close(self) -> None:
        """End the shell and every job it left (they share its process group)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._out.close()


@pytest.fixture
def shell_factory(tmp_path):
    shells = []

    def make(cwd: Path = ROOT, path_prefix: str = "") -> Shell:
        home = tmp_path / f"home{len(shells)}"
        home.mkdir()
        for config in PIP_USER_CONFIGS:  # where this machine's package indexes are
            if (Path.home() / config).is_file():
                (home / config).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path.home() / config, home / config)
        shell = Shell(cwd, home, path_prefix)
        shells.append(shell)
        return shell

    yield make
    for shell in shells:
        shell.close()


def run_lines(shell: Shell, lines: list[str]) -> dict[str, str]:
    """Type each line, waiting as a reader would; the output of each foreground line."""
    outputs = {}
    jobs: list[str] = []  # the names the background jobs registered, in job order
    for line in lines:
        command = command_of(line)
        words = shlex.split(command)
        if command.endswith("&"):
            shell.type(line)
            jobs.append(_wait_for_job(shell, words))
        elif words[:2] == ["regmgr", "serve"]:  # runs until Ctrl-C
            outputs[line] = shell.run(line, until=lambda out: "registry listening on" in out)
        elif words[:2] == ["regmgr", "watch"]:
            outputs[line] = shell.run(line, until=lambda out: re.search(r"^\+ ", out, re.M))
        elif words[0] == "kill" and words[1].startswith("%"):
            outputs[line] = shell.run(line)
            name = jobs[int(words[1][1:]) - 1]
            if name:
                wait_for(lambda: name not in listed(), f"{name} to be unregistered", shell)
        else:
            outputs[line] = shell.run(line)
    return outputs


def _wait_for_job(shell: Shell, words: list[str]) -> str:
    """Wait until a background command is up; the service name it registers, if any."""
    if words[:2] == ["regmgr", "serve"]:
        ports = [6702, 6703] + ([6675] if "--styx-port" in words else [])
        wait_for(lambda: all(accepting(port) for port in ports), "the registry", shell)
        return ""
    if words[:2] == ["regmgr", "register"]:
        wait_for(lambda: words[2] in listed(), f"{words[2]} to be listed", shell)
        return words[2]
    if words[0] == "gunicorn":
        host, port = words[words.index("-b") + 1].rsplit(":", 1)
        name = f"tcp!{host}!{port}"
        wait_for(lambda: name in listed() and accepting(int(port), host), f"{name} up", shell)
        return name
    return ""


def start_registry(shell_factory) -> Shell:
    """``regmgr serve`` "in another terminal", as the README says."""
    terminal = shell_factory()
    terminal.type("regmgr serve")
    wait_for(lambda: accepting(6702) and accepting(6703), "regmgr serve", terminal)
    return terminal


# --- which test runs which command ------------------------------------------

def shell_blocks() -> list[Block]:
    return [block for block in blocks(DOCUMENTS) if block.kind == "shell"]


def once(found: list[Block]) -> list[Block]:
    """The first of the blocks with the same text: the same commands run once."""
    seen: dict[str, Block] = {}
    for block in found:
        seen.setdefault(block.text, block)
    return list(seen.values())


def block_id(block: Block) -> str:
    return f"{block.path.relative_to(ROOT)}-{block.line}".replace("/", "-")


def fill(command: str, substitutions: dict[str, str]) -> str:
    for placeholder, value in substitutions.items():
        command = command.replace(placeholder, value)
    return command


def has_placeholders(command: str) -> bool:
    return any(placeholder in command for placeholder in PLACEHOLDERS)


def is_cli_session(block: Block) -> bool:
    return (block.lines[0].startswith("regmgr serve &")
            and any(line.startswith("regmgr watch") for line in block.lines))


def is_fresh_machine(block: Block) -> bool:
    return any(command_of(line).startswith("pip install . ") for line in block.lines)


def runnable(block: Block) -> list[str]:
    return [line for line in block.lines if command_of(line) not in NOT_RUN]


def generic_blocks() -> list[Block]:
    return [block for block in once(shell_blocks())
            if runnable(block) and not is_fresh_machine(block) and not is_cli_session(block)
            and not any(has_placeholders(line) for line in block.lines)]


def test_the_documents_have_commands():
    kinds = {block.kind for block in blocks(DOCUMENTS)}
    assert "shell" in kinds and shell_blocks() and inline_commands(DOCUMENTS)
    assert any(is_cli_session(block) for block in shell_blocks())
    assert any(is_fresh_machine(block) for block in shell_blocks())


def test_every_command_is_run():
    """Each command is run by a test here, or listed in NOT_RUN with its reason."""
    run = [command_of(line) for block in shell_blocks() for line in runnable(block)
           if not has_placeholders(line)]
    run += ["regmgr serve"]  # start_registry
    run += [block.command for block in blocks(DOCUMENTS) if block.kind == "file"]
    run += [command for commands, _ in SCENARIOS.values() for command in commands]
    commands = [(f"{item.path.name}:{item.line}", item.text) for item in inline_commands(DOCUMENTS)]
    commands += [(str(block), command_of(line)) for block in shell_blocks()
                 for line in block.lines]
    run += [part.strip() for line in run for part in line.split("&&")]
    missing = [f"{where}: {text}" for where, text in commands if text not in NOT_RUN
               and not any(line == text or line.startswith(text + " ") for line in run)]
    assert not missing, "commands no test runs (add them to a scenario):\n" + "\n".join(missing)


def test_the_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [command_of(line) for block in shell_blocks() for line in block.lines]
    assert "pip install -e '.[test]' && python -m pytest -q" in commands
    assert "pip install -e '.[test]' && python -m pytest -q" in ci


@pytest.mark.parametrize("block", generic_blocks(), ids=block_id)
@in_own_netns
def test_shell_block(block, shell_factory):
    """Each shell block, typed line by line; a registry runs if the block starts none."""
    if not any(command_of(line).startswith("regmgr serve") for line in block.lines):
        start_registry(shell_factory)
    outputs = run_lines(shell_factory(), runnable(block))
    for line, out in outputs.items():  # what the comments promise
        words = shlex.split(command_of(line))
        if words[:2] == ["regmgr", "find"]:
            assert out.strip(), f"{line!r} found nothing"
        if words[0] == "curl":
            assert re.search(r"^[{[]", out, re.M), out  # a JSON reply (curl's meter aside)


@pytest.mark.parametrize("block", [b for b in once(shell_blocks()) if is_cli_session(b)],
                         ids=block_id)
@in_own_netns
def test_the_cli_session(block, shell_factory):
    """The command-line session shows what it says: found, watched."""
    outputs = run_lines(shell_factory(), block.lines)
    find = next(out for line, out in outputs.items() if line.startswith("regmgr find"))
    assert "tcp!10.0.0.5!8080 proto http" in find
    watch = next(out for line, out in outputs.items() if line.startswith("regmgr watch"))
    assert re.search(r"^\+ tcp!10\.0\.0\.5!8080 proto http$", watch, re.M)


@pytest.mark.parametrize("block", once([b for b in blocks(DOCUMENTS) if b.kind == "file"]),
                         ids=block_id)
@in_own_netns
def test_saved_program(block, shell_factory, tmp_path):
    """"Save as FILE and run COMMAND": it registers, and SIGTERM unregisters it."""
    start_registry(shell_factory)
    work = tmp_path / "work"
    work.mkdir()
    (work / block.filename).write_text(block.text)
    shell = shell_factory(cwd=work)
    before = set(listed())
    shell.type(block.command)
    wait_for(lambda: set(listed()) - before, f"{block.command} to register", shell)
    [name] = set(listed()) - before
    [program] = [pid for pid in children(shell.proc.pid) if block.filename in cmdline(pid)]
    os.kill(program, signal.SIGTERM)
    wait_for(lambda: name not in listed(), f"{name} to be unregistered", shell)
    assert "Traceback" not in shell.output(), shell.output()


def test_placeholder_commands_belong_to_a_scenario():
    """Commands with placeholders run in a scenario; its filling is the only change."""
    written = {item.text for item in inline_commands(DOCUMENTS)}
    written |= {command_of(line) for block in shell_blocks() for line in block.lines}
    claimed = {command for commands, _ in SCENARIOS.values() for command in commands}
    assert {text for text in written if has_placeholders(text)} <= claimed
    for commands, substitutions in SCENARIOS.values():
        assert set(substitutions) <= set(PLACEHOLDERS)
        for command in commands:
            assert command in written, f"{command!r} is no longer in the documents"


@in_own_netns
def test_styx_scenario(shell_factory):
    """serve --styx-port, register --transport styx (persist 1), Ctrl-C, unregister --user."""
    commands, substitutions = SCENARIOS["styx"]
    serve, register, unregister = (fill(command, substitutions) for command in commands)
    name = shlex.split(substitutions["NAME"])[0]
    shell = shell_factory()
    run_lines(shell, [serve + " &", register + " &"])
    assert listed() == {name: {"persist": "1"}}
    shell.run("kill -INT %2 && wait %2")  # Ctrl-C the register job: persist 1 keeps the entry
    assert listed() == {name: {"persist": "1"}}
    shell.run(unregister)
    assert listed() == {}


@in_own_netns
def test_prose_scenario(shell_factory):
    """The front page's one-line commands: register, find and watch."""
    commands, substitutions = SCENARIOS["prose"]
    register, find, watch = (fill(command, substitutions) for command in commands)
    start_registry(shell_factory)
    outputs = run_lines(shell_factory(), [register + " &", find, watch])
    assert re.search(r"^tcp!10\.0\.0\.5!8080 proto http$", outputs[find], re.M)
    assert re.search(r"^\+ tcp!10\.0\.0\.5!8080 proto http$", outputs[watch], re.M)


@pytest.mark.parametrize("block", [b for b in once(shell_blocks()) if is_fresh_machine(b)],
                         ids=block_id)
@in_own_netns
def test_fresh_machine(block, shell_factory, tmp_path):
    """``pip install . && regmgr demo`` in a new virtualenv and a copy of the tree.

    The namespace has no network, so pip gets the dependencies from this
    test's environment (a ``.pth`` file) and the build tools from the
    machine's own package index configuration.
    """
    copy = tmp_path / "tree"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "build", "__pycache__", ".hypothesis", ".mypy_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    [packages] = list(venv.glob("lib/python*/site-packages"))
    (packages / "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    shell = shell_factory(cwd=copy, path_prefix=str(venv / "bin"))
    outputs = run_lines(shell, runnable(block))
    assert any("# done" in out for out in outputs.values()), shell.output()


def test_synopses_name_real_options():
    for block in blocks(DOCUMENTS):
        if block.kind != "synopsis":
            continue
        words = shlex.split(block.lines[0])
        help_text = subprocess.run([sys.executable, "-m", "regmgr", *words[1:2], "--help"],
                                   capture_output=True, text=True, timeout=60).stdout
        for option in re.findall(r"\[(-[-\w]+)", block.text):
            assert option in help_text, f"{block}: {option} is not an option of {words[:2]}"


def test_python_m_regmgr_is_the_regmgr_command():
    as_module = subprocess.run([sys.executable, "-m", "regmgr", "--help"],
                               capture_output=True, text=True, timeout=60)
    script = Path(sys.executable).with_name("regmgr")
    as_script = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert as_module.returncode == as_script.returncode == 0
    assert as_module.stdout == as_script.stdout
