"""Files and results larger than a request or a response can carry (limits lowered by
the test stack: uploads 8 MiB, responses 512 KiB): upload sessions verified before
attaching, and results answered with a redirect to a URL of their own."""

from __future__ import annotations

import hashlib
import os

import requests
from conftest import RESPONSE_LIMIT, UPLOAD_LIMIT
from test_api_contract import assert_error, call

from francine.tools.client import attach_file


def test_a_file_above_the_upload_limit_goes_through_an_upload_session(client, tmp_path):
    data = os.urandom(UPLOAD_LIMIT + 4096)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    sid = client.create_session("ao")["id"]
    assert_error(call(client, "PUT", f"/v1/sessions/{sid}/resources/big.bin", data=data), 413)
    record = attach_file(client, sid, "textures/big.bin", path)
    assert record == {"name": "textures/big.bin", "sha256": hashlib.sha256(data).hexdigest(),
                      "size": len(data)}
    listed = client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"]
    assert [r["name"] for r in listed] == ["textures/big.bin"]


def test_an_upload_that_differs_from_its_declaration_is_not_attached(client):
    sid = client.create_session("ao")["id"]
    body = {"name": "x.bin", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    upload = client.request("POST", f"/v1/sessions/{sid}/uploads", json=body).json()
    requests.put(upload["upload_url"], data=b"hellO", timeout=30).raise_for_status()
    err = assert_error(call(client, "POST", upload["finish"], json=body), 400,
                       "upload_mismatch")
    assert "declared 5 bytes" in err["message"]
    assert client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"] == []
    # The staging object is gone: finishing again finds nothing.
    assert_error(call(client, "POST", upload["finish"], json=body), 404)


def test_bad_upload_declarations_name_the_field(client):
    sid = client.create_session("ao")["id"]
    good = {"name": "a.bin", "size": 1, "sha256": "0" * 64}
    for patch, field in [({"size": -1}, "size"), ({"sha256": "xyz"}, "sha256"),
                         ({"name": "../a"}, "resource name"), ({"extra": 1}, "unknown")]:
        err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/uploads",
                                json={**good, **patch}), 400)
        assert field in err["message"]


def test_a_result_above_the_response_limit_is_a_redirect(client, adapters):
    sid = client.create_session("ao", {"width": 2048, "height": 2048, "nao_samples": 4},
                                fmt="exr")["id"]
    e = client.execute(sid, parallel=1)
    assert client.wait(sid, e["id"], timeout_s=180)["status"] == "done"
    path = f"/v1/sessions/{sid}/executions/{e['id']}/result"
    resp = call(client, "GET", path, allow_redirects=False)
    assert resp.status_code == 307, resp.status_code
    assert "Authorization" not in resp.headers
    followed = client.request("GET", path)  # clients follow redirects
    ex = adapters.store.execution(sid, e["id"])
    assert followed.content == adapters.blobs.get_result(ex.result)
    assert len(followed.content) > RESPONSE_LIMIT
    assert followed.content[:4] == b"\x76\x2f\x31\x01"  # the EXR magic number
