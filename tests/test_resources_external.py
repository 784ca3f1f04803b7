"""Attaching external files by URL: gs:// objects (from the storage emulator) are
fetched once, hashed and stored like uploads; bad and internal URLs are refused."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from test_api_contract import assert_error, call

from francine.tools.local.processes import environment


def allow_bucket(stack, client, bucket: str) -> None:
    """What an administrator does with 'francine users allow-bucket USER BUCKET'."""
    from google.cloud import firestore

    from francine.adapters.store import Store
    from francine.services import users

    key = client.session.headers["Authorization"].split()[1]
    with environment(stack.info["env"]):
        store = Store(firestore.Client(project=stack.info["project"]))
        users.set_buckets(store, store.get_user(users.key_hash(key))["id"], [bucket])


@pytest.fixture
def external_object(stack, client):
    """An object in a bucket of the user's own (not one of Francine's buckets), which
    an administrator allowed the user to attach from."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with environment(stack.info["env"]):
        gcs = storage.Client(project=stack.info["project"],
                             credentials=AnonymousCredentials())
        bucket = gcs.create_bucket(f"user-data-{uuid.uuid4().hex[:12]}")
        data = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n" * 1000
        bucket.blob("scenes/tri.obj").upload_from_string(data)
        allow_bucket(stack, client, bucket.name)
        yield f"gs://{bucket.name}/scenes/tri.obj", data
        bucket.delete(force=True)


def test_gs_url_is_fetched_hashed_and_stored(client, external_object, adapters):
    url, data = external_object
    sid = client.create_session("ao")["id"]
    resp = call(client, "POST", f"/v1/sessions/{sid}/resources",
                json={"name": "tri.obj", "url": url})
    assert resp.status_code == 201, resp.text
    expected = {"name": "tri.obj", "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data)}
    assert resp.json() == expected
    assert adapters.blobs.has_resource(expected["sha256"])
    # the same again is a no-op; an upload of other bytes under that name a conflict
    again = call(client, "POST", f"/v1/sessions/{sid}/resources",
                 json={"name": "tri.obj", "url": url})
    assert again.status_code == 200 and again.json() == expected
    assert_error(call(client, "PUT", f"/v1/sessions/{sid}/resources/tri.obj", data=b"x"), 409)


@pytest.mark.parametrize("body,code", [
    ({"name": "a.obj", "url": "http://example.com/a.obj"}, "invalid_field"),
    ({"name": "a.obj", "url": "ftp://example.com/a.obj"}, "invalid_field"),
    ({"name": "a.obj", "url": "gs://"}, "invalid_field"),
    ({"name": "a.obj", "url": 42}, "invalid_field"),
    ({"name": "a.obj"}, "invalid_field"),
    ({"name": "../a.obj", "url": "gs://b/a.obj"}, "invalid_name"),
    ({"name": "a.obj", "url": "gs://b/a.obj", "x": 1}, "invalid_field"),
    # Francine's own buckets hold other users' images
    ({"name": "a.png", "url": "gs://francine-results/results/s/e.png"}, "fetch_failed"),
    ({"name": "a.obj", "url": "gs://francine-resources/resources/abc"}, "fetch_failed"),
    # internal addresses are refused before any request is made
    ({"name": "a.obj", "url": "https://127.0.0.1/a.obj"}, "fetch_failed"),
    ({"name": "a.obj", "url": "https://169.254.169.254/computeMetadata/v1/"}, "fetch_failed"),
    ({"name": "a.obj", "url": "https://localhost/a.obj"}, "fetch_failed"),
])
def test_bad_urls_are_400(client, body, code):
    sid = client.create_session("ao")["id"]
    assert_error(call(client, "POST", f"/v1/sessions/{sid}/resources", json=body), 400, code)
    assert client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"] == []


def test_files_too_large_to_upload_are_attached_by_url_up_to_the_resource_limit(
        client, stack):
    from conftest import RESOURCE_LIMIT_BYTES, UPLOAD_LIMIT
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with environment(stack.info["env"]):
        gcs = storage.Client(project=stack.info["project"], credentials=AnonymousCredentials())
        bucket = gcs.create_bucket(f"user-big-{uuid.uuid4().hex[:12]}")
        allow_bucket(stack, client, bucket.name)
        try:
            sid = client.create_session("ao")["id"]
            medium = b"m" * (UPLOAD_LIMIT + 1)
            err = assert_error(call(client, "PUT", f"/v1/sessions/{sid}/resources/medium.bin",
                                    data=medium), 413)
            assert "gs://" in err["message"]  # the way out is named
            bucket.blob("medium.bin").upload_from_string(medium)
            resp = call(client, "POST", f"/v1/sessions/{sid}/resources",
                        json={"name": "medium.bin", "url": f"gs://{bucket.name}/medium.bin"})
            assert resp.status_code == 201 and resp.json()["size"] == len(medium)
            bucket.blob("big.bin").upload_from_string(b"z" * (RESOURCE_LIMIT_BYTES + 1))
            assert_error(call(client, "POST", f"/v1/sessions/{sid}/resources",
                              json={"name": "big.bin", "url": f"gs://{bucket.name}/big.bin"}),
                         413)
        finally:
            bucket.delete(force=True)


def test_gs_buckets_only_from_the_users_allow_list(client, stack, external_object):
    """No confused deputy: user B cannot attach what user A's bucket lets Francine read."""
    from francine.tools.client import Client
    from francine.tools.local.stack import create_user_in

    url, _ = external_object  # allowed for `client` only
    other = Client(stack.info["api_url"],
                   create_user_in(stack.info["env"], stack.info["project"], "mallory"))
    sid = other.create_session("ao")["id"]
    err = assert_error(call(other, "POST", f"/v1/sessions/{sid}/resources",
                            json={"name": "tri.obj", "url": url}), 403, "bucket_not_allowed")
    assert "allow" in err["message"]
    assert other.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"] == []
    mine = client.create_session("ao")["id"]
    assert call(client, "POST", f"/v1/sessions/{mine}/resources",
                json={"name": "tri.obj", "url": url}).status_code == 201
