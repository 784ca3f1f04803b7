"""'francine users ...' against the local stack: create, list, revoke (at once),
rotate (the old key stops, the user keeps its sessions), allowed gs:// buckets."""

from __future__ import annotations

import json
import subprocess
import sys

import requests

FRANCINE = [sys.executable, "-m", "francine.tools.cli"]


def francine(stack, tmp_path, *args) -> str:
    (tmp_path / "stack.json").write_text(json.dumps(stack.info))
    run = subprocess.run([*FRANCINE, "--state-dir", str(tmp_path), "users", *args],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_create_list_revoke_rotate(stack, tmp_path):
    api = stack.info["api_url"]
    name = f"carol-{tmp_path.name[-6:]}"
    key = francine(stack, tmp_path, "create", name, "--bucket", "carols-data")
    auth = {"Authorization": f"Bearer {key}"}
    sid = requests.post(api + "/v1/sessions", json={"producer": "ao"}, headers=auth,
                        timeout=30).json()["id"]
    listed = [json.loads(line) for line in francine(stack, tmp_path, "list").splitlines()]
    mine = [u for u in listed if u["name"] == name]
    assert len(mine) == 1 and mine[0]["buckets"] == ["carols-data"]
    assert "key" not in json.dumps(mine).lower() or key not in json.dumps(mine)
    assert json.loads(francine(stack, tmp_path, "allow-bucket", name, "more-data")) == [
        "carols-data", "more-data"]
    assert json.loads(francine(stack, tmp_path, "deny-bucket", name, "carols-data")) == [
        "more-data"]

    new_key = francine(stack, tmp_path, "rotate", name)
    assert new_key != key
    assert requests.get(api + "/v1/sessions", headers=auth, timeout=30).status_code == 401
    new_auth = {"Authorization": f"Bearer {new_key}"}
    sessions = requests.get(api + "/v1/sessions", headers=new_auth, timeout=30).json()
    assert [s["id"] for s in sessions["sessions"]] == [sid]  # same user, same sessions

    francine(stack, tmp_path, "revoke", name)
    # at once: the very next request is refused
    assert requests.get(api + "/v1/sessions", headers=new_auth, timeout=30).status_code == 401
    assert name not in francine(stack, tmp_path, "list")
