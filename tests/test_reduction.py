"""Reducing with bounded memory: children are added as they arrive, a few downloads at
a time; the reducer's memory does not grow with the fan-in, and the planner refuses an
image that the reducer could not hold."""

from __future__ import annotations

import dataclasses
import threading
import tracemalloc

import numpy as np
import pytest
from test_api_contract import assert_error, call

from francine import producers
from francine.base import errors
from francine.base.concurrency import fetched_in_order
from francine.base.config import Settings
from francine.domain import imaging, planning, reduction
from francine.domain.producer import Tile
from francine.domain.records import Session
from francine.services import executions
from francine.twins import twin_adapters


@pytest.mark.parametrize("shape", [
    planning.make_shape(100, 70, 3, 16),          # many tiles, several passes
    planning.make_shape(100, 70, 40, 64, fold=3),  # few tiles, folded passes
    planning.make_shape(33, 20, 50, None),         # one tile, every node the whole image
])
def test_a_node_covers_the_union_of_the_tiles_under_it(shape):
    def under(node):
        level, _ = planning.parse_node(node)
        if level == 0:
            return [int(node[1:])]
        return [i for c in planning.children(shape, node) for i in under(c)]

    for node in planning.all_nodes(shape):
        tiles = [planning.tile_of(shape, i) for i in under(node)]
        expected = (min(t.x0 for t in tiles), min(t.y0 for t in tiles),
                    max(t.x0 + t.width for t in tiles), max(t.y0 + t.height for t in tiles))
        assert reduction.region(shape, node) == expected, node


def partials_of(shape, rng):
    return {planning.node_name(0, i): imaging.dump_partial(imaging.from_pass(
        planning.tile_of(shape, i), shape.tile,
        rng.random((planning.tile_of(shape, i).height, planning.tile_of(shape, i).width, 3),
                   dtype=np.float32)))
        for i in range(shape.productions)}


def test_accumulating_equals_combining_with_a_bounded_number_of_downloads():
    shape = planning.make_shape(96, 64, 9, 16)
    blobs = partials_of(shape, np.random.default_rng(1))
    lock, flying, most = threading.Lock(), [0], [0]

    def get(node):
        with lock:
            flying[0] += 1
            most[0] = max(most[0], flying[0])
        try:
            return blobs[node]
        finally:
            with lock:
                flying[0] -= 1

    for node in planning.all_nodes(shape):
        if node.startswith("r") and planning.parse_node(node)[0] == 1:
            got = reduction.accumulate(shape, node, fetched_in_order(
                get, planning.children(shape, node), reduction.WINDOW))
            want = imaging.combine(imaging.load_partial(blobs[c])
                                   for c in planning.children(shape, node))
            assert (got.x0, got.y0) == (want.x0, want.y0)
            np.testing.assert_array_equal(got.sum, want.sum)
            np.testing.assert_array_equal(got.count, want.count)
    assert 1 <= most[0] <= reduction.WINDOW


def test_a_partial_viewed_in_place_equals_one_loaded():
    shape = planning.make_shape(40, 24, 2, 16)
    for data in partials_of(shape, np.random.default_rng(2)).values():
        a, b = imaging.view_partial(data), imaging.load_partial(data)
        assert (a.x0, a.y0, a.tile) == (b.x0, b.y0, b.tile)
        np.testing.assert_array_equal(a.sum, b.sum)
        np.testing.assert_array_equal(a.count, b.count)
        assert not a.sum.flags.writeable  # a view of the downloaded bytes


def peak_while_reducing(fan_in: int) -> int:
    """Peak traced memory of reducing ``fan_in`` whole-image children into one."""
    shape = dataclasses.replace(planning.make_shape(128, 128, fan_in, None), fan_in=fan_in)
    image = np.ones((128, 128, 3), np.float32)
    data = imaging.dump_partial(imaging.from_pass(Tile(0, 0, 128, 128), 128, image))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        total = reduction.accumulate(shape, shape.root, fetched_in_order(
            lambda _node: bytes(data), planning.children(shape, shape.root)))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert total.count.sum() == fan_in
    return peak


def test_memory_does_not_grow_with_the_fan_in():
    pixels = 128 * 128
    running_sum = pixels * (3 * 8 + 4)  # fixed point, and the sum of squares
    child = pixels * 3 * 4  # one pass, stored in 32 bits, its squares left out
    few, many = peak_while_reducing(4), peak_while_reducing(64)
    # the sum, WINDOW children (the one being added is not copied) and the squares of
    # the one being added: not 64 children
    assert many <= running_sum + (reduction.WINDOW + 1.5) * child
    assert many < 1.5 * few


def test_the_planner_refuses_an_image_the_reducer_cannot_hold():
    ad = twin_adapters(dataclasses.replace(Settings(), reducer_memory_bytes=256 << 20))
    big = {"width": 4096, "height": 4096, "nsubsamples": 1, "nao_samples": 1}
    ad.store.create_session(Session("s", "u", "ao", "png", big))
    with pytest.raises(errors.BadRequest) as info:
        executions.start(ad, "u", "s", {"parallel": 4, "tile": 1024})
    assert info.value.code == "image_too_large" and "4096×4096" in str(info.value)
    assert not ad.store.executions  # nothing created, nothing published
    ad.store.create_session(Session("t", "u", "ao", "png", dict(big, width=512, height=512)))
    ex, _ = executions.start(ad, "u", "t", {"parallel": 4, "tile": 256})
    assert ex.status == "queued"


def test_the_estimate_counts_the_channels_a_denoised_render_carries():
    # Blender's partials are RGBA, and with denoising also albedo and normal: 10.
    assert producers.partial_channels("blender", {"denoise": False}) == 4
    assert producers.partial_channels("blender", {"denoise": True}) == 10
    assert producers.partial_channels("pathtracer", {}) == 3
    shape = planning.make_shape(4096, 4096, 16, 1024)
    limit = reduction.peak_bytes(shape, 4) + (1 << 20)
    reduction.check_fits(shape, 4, limit)  # fits without denoising
    with pytest.raises(errors.BadRequest) as info:
        reduction.check_fits(shape, producers.partial_channels("blender", {"denoise": True}),
                             limit)
    assert info.value.code == "image_too_large" and "10 channel" in str(info.value)


def test_the_api_answers_400_for_an_image_beyond_the_reducers_memory(client):
    sid = client.create_session("ao", {"width": 12288, "height": 12288, "nsubsamples": 1,
                                       "nao_samples": 1})["id"]
    err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions",
                            json={"tile": 2048}), 400, "image_too_large")
    assert "scene" in err["message"] and "MiB" in err["message"]
    assert client.request("GET", f"/v1/sessions/{sid}/executions").json()["executions"] == []
