"""Retention on the local stack: partials of finished executions, results of deleted
sessions and resources no session names any more are collected; a failed render of
the CLI leaves no session behind."""

from __future__ import annotations

import hashlib
import time

import pytest
from test_api_contract import call

from francine.services import retention


def test_collect_removes_what_nothing_needs(client, adapters):
    s = client.create_session("ao", {"width": 16, "height": 16, "nao_samples": 1})
    sid = s["id"]
    kept = client.create_session("ao")["id"]
    shared, alone = b"shared bytes\n", b"only in the deleted session\n"
    for name, data, sessions in [("s.bin", shared, (sid, kept)), ("a.bin", alone, (sid,))]:
        for session in sessions:
            assert call(client, "PUT", f"/v1/sessions/{session}/resources/{name}",
                        data=data).status_code == 201
    e = client.execute(sid, parallel=2, tile=8)
    assert client.wait(sid, e["id"], timeout_s=120)["status"] == "done"
    partials = list(adapters.blobs.list_objects("partials", f"partials/{sid}/"))
    assert partials  # the reducer's inputs are still there
    done = retention.collect(adapters, partials_after_s=0, grace_s=0)
    assert done.partials >= len(partials)
    assert not list(adapters.blobs.list_objects("partials", f"partials/{sid}/"))
    assert adapters.blobs.has_resource(hashlib.sha256(alone).hexdigest())  # still named

    assert call(client, "DELETE", f"/v1/sessions/{sid}").status_code == 204
    deadline = time.monotonic() + 30
    while adapters.store.get_session(sid) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    done = retention.collect(adapters, partials_after_s=0, grace_s=0)
    assert done.resources >= 1
    assert not adapters.blobs.has_resource(hashlib.sha256(alone).hexdigest())
    assert adapters.blobs.has_resource(hashlib.sha256(shared).hexdigest())  # `kept` has it


def test_failed_cli_render_leaves_no_session(client, tmp_path):
    from francine.tools.cli import render
    from francine.tools.client import ApiError

    with pytest.raises(ApiError):  # a tile below the minimum: refused after the session
        render(client, "ao", tmp_path / "x.png", parallel=1, tile=1, fmt=None)
    assert client.request("GET", "/v1/sessions").json()["sessions"] == []
