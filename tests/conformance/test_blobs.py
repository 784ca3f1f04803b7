"""The Blobs port: the same assertions on the Cloud Storage emulator and on the twin."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import pytest

from francine.base import errors


def test_partials_round_trip_in_order(backend, unique):
    for i in range(5):
        backend.blobs.put_partial(unique, "e1", f"p{i}", bytes([i]) * (i + 1))
    assert backend.blobs.get_partial(unique, "e1", "p3") == b"\x03" * 4
    nodes = ["p4", "p0", "p2"]
    assert backend.blobs.get_partials(unique, "e1", nodes) == [b"\x04" * 5, b"\x00",
                                                                b"\x02" * 3]
    assert list(backend.blobs.stream_partials(unique, "e1", nodes, 2)) == [
        b"\x04" * 5, b"\x00", b"\x02" * 3]


def test_a_partial_is_created_once_and_never_overwritten(backend, unique):
    # Create-only (if_generation_match=0): a speculative copy or a retry that comes
    # second writes nothing and is told so; the first bytes stay.
    assert backend.blobs.put_partial(unique, "e1", "p0", b"first") is True
    assert backend.blobs.put_partial(unique, "e1", "p0", b"second") is False
    assert backend.blobs.get_partial(unique, "e1", "p0") == b"first"
    assert backend.blobs.put_partial(unique, "e1", "p1", b"other") is True  # per name
    assert backend.blobs.get_partials(unique, "e1", ["p1", "p0"]) == [b"other", b"first"]


def test_missing_objects_are_not_found(backend, unique):
    with pytest.raises(errors.NotFound):
        backend.blobs.get_partial(unique, "e1", "p0")
    with pytest.raises(errors.NotFound):
        backend.blobs.get_partials(unique, "e1", ["p0"])
    with pytest.raises(errors.NotFound):
        list(backend.blobs.stream_partials(unique, "e1", ["p0"], 2))
    with pytest.raises(errors.NotFound):
        backend.blobs.get_result(backend.blobs.result_name(unique, "e1", "png"))


def test_results_round_trip(backend, unique):
    name = backend.blobs.result_name(unique, "e1", "png")
    assert name == f"results/{unique}/e1.png"
    backend.blobs.put_result(name, b"\x89PNG", "image/png")
    assert backend.blobs.get_result(name) == b"\x89PNG"


def test_resources_by_content_hash(backend, unique, tmp_path):
    blobs = backend.blobs
    data = f"the bytes of {unique}".encode()
    sha = hashlib.sha256(data).hexdigest()
    assert not blobs.has_resource(sha)
    (tmp_path / "src").write_bytes(data)
    blobs.put_resource(sha, tmp_path / "src")
    assert blobs.has_resource(sha)
    blobs.fetch_resource(sha, tmp_path / "dest")
    assert (tmp_path / "dest").read_bytes() == data
    blobs.delete_resource(sha)
    assert not blobs.has_resource(sha)
    blobs.delete_resource(sha)  # gone already: nothing to do
    with pytest.raises(errors.NotFound):
        blobs.fetch_resource(sha, tmp_path / "again")


def test_a_result_is_measured_and_served_by_url(backend, unique):
    blobs = backend.blobs
    name = blobs.result_name(unique, "e1", "png")
    assert blobs.result_size(name) is None
    blobs.put_result(name, b"\x89PNG" * 10, "image/png")
    assert blobs.result_size(name) == 40
    url = blobs.result_url(name, dt.timedelta(minutes=15))
    assert backend.download(url) == b"\x89PNG" * 10


def test_an_upload_is_sent_by_url_and_read_back(backend, unique, tmp_path):
    blobs = backend.blobs
    name = f"uploads/{unique}/{uuid.uuid4().hex}"
    data = bytes(range(256)) * 40
    url = blobs.start_upload(name, len(data), None)
    with pytest.raises(errors.NotFound):  # nothing sent yet
        blobs.fetch_upload(name, tmp_path / "early")
    backend.upload(url, data)
    blobs.fetch_upload(name, tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == data
    assert blobs.delete_object("resources", name) is True
    assert blobs.delete_object("resources", name) is False  # gone already
    with pytest.raises(errors.NotFound):  # finished once
        blobs.fetch_upload(name, tmp_path / "again")


def test_objects_are_listed_by_area_and_prefix_and_deleted_once(backend, unique):
    blobs = backend.blobs
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for eid, node in (("e1", "p1"), ("e1", "p0"), ("e2", "p0")):
        blobs.put_partial(unique, eid, node, node.encode())
    result = blobs.result_name(unique, "e1", "png")
    blobs.put_result(result, b"r", "image/png")
    listed = list(blobs.list_objects("partials", f"partials/{unique}/"))
    assert [o.name for o in listed] == [blobs.partial_name(unique, eid, node) for eid, node in
                                        (("e1", "p0"), ("e1", "p1"), ("e2", "p0"))]
    assert all(before < o.created < before + dt.timedelta(minutes=10) for o in listed)
    assert [o.name for o in blobs.list_objects("partials", f"partials/{unique}/e2/")] == [
        blobs.partial_name(unique, "e2", "p0")]
    assert [o.name for o in blobs.list_objects("results", f"results/{unique}/")] == [result]
    assert list(blobs.list_objects("results", f"partials/{unique}/")) == []  # other bucket
    first = blobs.partial_name(unique, "e1", "p0")
    assert blobs.delete_object("results", first) is False  # not in that bucket
    assert blobs.delete_object("partials", first) is True
    assert blobs.delete_object("partials", first) is False
    assert len(list(blobs.list_objects("partials", f"partials/{unique}/"))) == 2
    with pytest.raises(errors.NotFound):
        blobs.get_partial(unique, "e1", "p0")


def test_a_sessions_partials_and_results_go_with_it(backend, unique, tmp_path):
    blobs = backend.blobs
    blobs.put_partial(unique, "e1", "p0", b"a")
    blobs.put_partial(unique, "e2", "p0", b"b")
    blobs.put_result(blobs.result_name(unique, "e1", "png"), b"r", "image/png")
    blobs.put_partial(f"{unique}-kept", "e1", "p0", b"kept")
    data = f"shared bytes of {unique}".encode()
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "r").write_bytes(data)
    blobs.put_resource(sha, tmp_path / "r")
    assert blobs.delete_session(unique) == 3
    assert blobs.delete_session(unique) == 0
    with pytest.raises(errors.NotFound):
        blobs.get_partial(unique, "e1", "p0")
    assert blobs.get_partial(f"{unique}-kept", "e1", "p0") == b"kept"
    assert blobs.has_resource(sha)  # shared by content: resources stay
    blobs.delete_resource(sha)
