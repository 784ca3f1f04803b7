"""The Blobs port: the same assertions on the Cloud Storage emulator and on the twin."""

from __future__ import annotations

import pytest

from francine import errors


def test_partials_round_trip_in_order(backend, unique):
    for i in range(5):
        backend.blobs.put_partial(unique, "e1", f"p{i}", bytes([i]) * (i + 1))
    assert backend.blobs.get_partial(unique, "e1", "p3") == b"\x03" * 4
    nodes = ["p4", "p0", "p2"]
    assert backend.blobs.get_partials(unique, "e1", nodes) == [b"\x04" * 5, b"\x00",
                                                                b"\x02" * 3]


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
        backend.blobs.get_result(backend.blobs.result_name(unique, "e1", "png"))


def test_results_round_trip(backend, unique):
    name = backend.blobs.result_name(unique, "e1", "png")
    assert name == f"results/{unique}/e1.png"
    backend.blobs.put_result(name, b"\x89PNG", "image/png")
    assert backend.blobs.get_result(name) == b"\x89PNG"
