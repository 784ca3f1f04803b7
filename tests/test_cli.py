"""The command line as a person uses it: `francine stack up` in the foreground, users,
a render from a scene file, `stack status` with its logs, and `stack down` (or Ctrl-C)
leaving nothing behind."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

from PIL import Image

from francine.tools.local.processes import environment, free_port

FRANCINE = [sys.executable, "-m", "francine.tools.cli"]


def listening(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def addresses(info: dict) -> list[str]:
    urls = [info["api_url"], info["reducer_url"], *info["workers"],
            *info["emulators"].values()]
    return [urlparse(u if "//" in u else f"http://{u}").netloc for u in urls
            if u.startswith("http") or ":" in u]


def test_stack_up_render_status_and_down(tmp_path):
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    (state / "logs" / "api.log").write_text("a line of the previous stack\n")
    port = free_port()
    # Only the variables of this test (the session's stack exports its own settings):
    # farm admission off by its variable, so the per-execution limit carries over.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FRANCINE_")},
           "FRANCINE_ADMISSION_LIMIT": "2", "FRANCINE_FARM_SLOTS": "0",
           "PYTHONUNBUFFERED": "1"}
    up = subprocess.Popen([*FRANCINE, "--state-dir", str(state), "stack", "up", "--workers",
                           "1", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (state / "stack.json").exists():
            assert up.poll() is None, up.stdout.read()
            assert time.monotonic() < deadline, "stack did not come up"
            time.sleep(0.2)
        info = json.loads((state / "stack.json").read_text())
        assert info["api_url"] == f"http://127.0.0.1:{port}"
        assert info["api_key"].startswith("fr_")
        assert f"http://127.0.0.1:{port}" in up.stdout.readline()

        key = subprocess.run([*FRANCINE, "--state-dir", str(state), "users", "create", "bob"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert key.startswith("fr_") and key != info["api_key"]

        scene = tmp_path / "scene.json"
        scene.write_text(json.dumps({"producer": "ao", "scene": {
            "width": 64, "height": 48, "nao_samples": 2}}))
        out = tmp_path / "out.png"
        # 6 passes × 2 tiles with at most 2 in flight: admission control must publish
        # the rest as tasks finish, or this never completes.
        rendered = subprocess.run(
            [*FRANCINE, "--state-dir", str(state), "render", str(scene), "-o", str(out),
             "--parallel", "6", "--tile", "32", "--key", key],
            capture_output=True, text=True, timeout=180)
        assert rendered.returncode == 0, rendered.stderr
        assert "100.0%" in rendered.stderr  # the progress bar reached the end
        assert "total" in rendered.stdout and "producing" in rendered.stdout
        assert Image.open(io.BytesIO(out.read_bytes())).size == (64, 48)
        with environment(info["env"]):
            from google.cloud import firestore

            executions = list(firestore.Client(project=info["project"])
                              .collection_group("executions").stream())
        assert [e.get("admission_limit") for e in executions] == [2]
        assert all(listening(a) for a in addresses(info))

        status = subprocess.run([*FRANCINE, "--state-dir", str(state), "stack", "status"],
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert f"http://127.0.0.1:{port}" in status.stdout and "answering" in status.stdout
        for name in ("api.log", "reducer.log", "worker-0.log", "firestore.log"):
            assert name in status.stdout
        # Fresh logs for this stack (the last one's are kept aside), with the request log:
        # method, path, status, duration and user, never the key.
        api_log = (state / "logs" / "api.log").read_text()
        assert "previous stack" not in api_log
        assert "previous stack" in (state / "logs.previous" / "api.log").read_text()
        # every line is a Cloud Logging JSON entry; the request log's have httpRequest
        lines = [json.loads(line) for line in api_log.splitlines() if line.strip()]
        assert lines and all({"severity", "message"} <= line.keys() for line in lines)
        requests_logged = [line for line in lines if line.get("logger") == "francine.requests"]
        posts = [r for r in requests_logged if r["httpRequest"]["requestMethod"] == "POST"]
        assert posts and all(r["user"] for r in posts)
        assert {r["httpRequest"]["status"] for r in posts} <= {201, 202}
        assert key not in api_log and info["api_key"] not in api_log

        down = subprocess.run([*FRANCINE, "--state-dir", str(state), "stack", "down"],
                              capture_output=True, text=True, timeout=90)
        assert down.returncode == 0, down.stderr
        assert "stopped" in down.stdout
    finally:
        try:
            code = up.wait(30)
        except subprocess.TimeoutExpired:  # down failed: Ctrl-C it
            up.send_signal(signal.SIGINT)
            code = up.wait(60)
    assert code == 0
    assert not (state / "stack.json").exists()
    time.sleep(0.5)
    assert [a for a in addresses(info) if listening(a)] == []


def test_commands_without_a_stack_say_so(tmp_path):
    for command in (["users", "create", "x"], ["stack", "status"], ["stack", "down"]):
        r = subprocess.run([*FRANCINE, "--state-dir", str(tmp_path), *command],
                           capture_output=True, text=True)
        assert r.returncode != 0 and "no running stack" in r.stderr
        assert "Traceback" not in r.stderr


def test_stack_up_without_the_emulators_says_what_to_install(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    r = subprocess.run([*FRANCINE, "--state-dir", str(tmp_path), "stack", "up"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "gcloud is not on PATH" in r.stderr


def test_stack_up_turns_fair_share_on_unless_told():
    from francine.tools.cli import farm_slots_of

    assert farm_slots_of(None, 3, {}) == 6  # twice the workers
    assert farm_slots_of(0, 3, {}) == 0 and farm_slots_of(5, 3, {}) == 5  # the option
    # the caller's variable (0 too): the stack's settings read it
    assert farm_slots_of(None, 3, {"FRANCINE_FARM_SLOTS": "0"}) is None
