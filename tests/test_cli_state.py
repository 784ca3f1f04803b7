"""The command line from any folder: the local stack's state in a per-user folder (or
``--state-dir`` / ``FRANCINE_STATE_DIR``, before or after the command), one stack per
state folder, its key and viewer said at start, ``--persist`` keeping sessions across
restarts; ``--version`` and a clean ``--help``."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

FRANCINE = [sys.executable, "-m", "francine.tools.cli"]


def run(*argv, cwd, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([*FRANCINE, *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start(state, persist, cwd, env) -> tuple[subprocess.Popen, str]:
    """``francine stack up --persist`` in the background; its first lines once up."""
    up = subprocess.Popen([*FRANCINE, "stack", "up", "--workers", "1", "--persist",
                           str(persist)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (state / "stack.json").exists():
        assert up.poll() is None, up.stdout.read()
        assert time.monotonic() < deadline, "stack did not come up"
        time.sleep(0.2)
    return up, "".join(up.stdout.readline() for _ in range(5))


@pytest.fixture
def elsewhere(tmp_path):
    """A folder that is not the checkout, and an environment whose state folder is
    ``$XDG_STATE_HOME/francine`` under the test's folder."""
    cwd = tmp_path / "scenes"
    cwd.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FRANCINE_")},
           "XDG_STATE_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}
    return cwd, env, tmp_path / "xdg" / "francine"


def test_a_stack_is_found_from_any_folder_and_keeps_its_data_with_persist(elsewhere,
                                                                          tmp_path):
    cwd, env, state = elsewhere
    persist = tmp_path / "data"
    up, said = start(state, persist, cwd, env)
    try:
        assert "viewer" in said and "/viewer" in said
        key = (persist / "local-user.key").read_text().strip()
        assert key in said and f"kept in {persist}" in said
        # A second stack in the same state folder is refused, and says where one runs.
        again = run("stack", "up", cwd=cwd, env=env, timeout=60)
        assert again.returncode == 1 and "already runs" in again.stderr
        assert str(state) in again.stderr and "Traceback" not in again.stderr
        out = tmp_path / "a.png"
        r = run("render", "ao", "-o", out, "--parallel", "2", cwd=cwd, env=env)
        assert r.returncode == 0, r.stderr
        listed = run("sessions", "ls", cwd=cwd, env=env)
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split() == ["SESSION", "PRODUCER", "FORMAT", "IMAGE", "RESOURCES",
                                  "CREATED"]
        sid = row.split()[0]
        assert row.split()[1:4] == ["ao", "png", "512x512"]
        # The global option after the command, as well as before it.
        assert run("stack", "status", "--state-dir", state, cwd=cwd, env=env).returncode == 0
        assert run("--state-dir", state, "stack", "status", cwd=cwd, env=env).returncode == 0
        assert run("stack", "down", cwd=cwd, env=env).returncode == 0
    finally:
        up.wait(60)
    # Started again with the same data: the session, its execution and its image.
    up, said = start(state, persist, cwd, env)
    try:
        assert key in said
        executions = run("executions", "ls", sid, cwd=cwd, env=env)
        assert executions.returncode == 0, executions.stderr
        assert executions.stdout.splitlines()[0].split()[:6] == [
            "EXECUTION", "STATUS", "PROGRESS", "IMAGE", "PASSES", "FRAMES"]
        eid, status = executions.stdout.splitlines()[1].split()[:2]
        assert status == "done"
        again = tmp_path / "again.png"
        r = run("executions", "result", eid, "-o", again, cwd=cwd, env=env)
        assert r.returncode == 0, r.stderr
        assert again.read_bytes() == out.read_bytes()
    finally:
        run("stack", "down", cwd=cwd, env=env)
        up.wait(60)


def test_without_persist_the_stack_says_it_forgets(elsewhere, tmp_path):
    cwd, env, state = elsewhere
    up = subprocess.Popen([*FRANCINE, "stack", "up", "--workers", "1"], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        said = "".join(up.stdout.readline() for _ in range(5))
        assert "in memory: sessions are gone when the stack stops" in said
    finally:
        run("stack", "down", cwd=cwd, env=env)
        up.wait(60)


def test_version_and_help(elsewhere):
    cwd, env, state = elsewhere
    version = run("--version", cwd=cwd, env=env)
    assert version.returncode == 0 and version.stdout.startswith("francine ")
    for argv in (["--help"], ["render", "--help"], ["stack", "up", "--help"],
                 ["users", "create", "--help"]):
        r = run(*argv, cwd=cwd, env=env)
        assert r.returncode == 0, r.stderr
        assert "(default: None)" not in r.stdout and "``" not in r.stdout
        flat = " ".join(r.stdout.split())
        assert ") (default:" not in flat  # one default per option, said once
    # The default state folder is said (argparse may wrap it anywhere).
    assert str(state) in "".join(run("--help", cwd=cwd, env=env).stdout.split())
