"""Partials, their reduction, tone mapping and encoding, against direct NumPy means."""

import io

import numpy as np
import pytest
from PIL import Image

from francine.domain import imaging, planning
from francine.domain.producer import Tile


def passes_for(shape, rng):
    """A random pass per production task, and the full-image mean they should give."""
    partials, total = [], np.zeros((shape.height, shape.width, 3), np.float64)
    for i in range(shape.productions):
        t = planning.tile_of(shape, i)
        px = rng.random((t.height, t.width, 3), dtype=np.float32)
        total[t.y0:t.y0 + t.height, t.x0:t.x0 + t.width] += px
        partials.append(imaging.from_pass(t, shape.tile, px))
    return partials, total / shape.passes


@pytest.mark.parametrize("w,h,passes,tile", [(50, 30, 3, 16), (64, 64, 5, None), (33, 65, 4, 8)])
def test_tree_reduction_equals_the_mean_of_all_passes(w, h, passes, tile):
    shape = planning.make_shape(w, h, passes, tile)
    partials, expected = passes_for(shape, np.random.default_rng(1))
    results = {planning.node_name(0, i): p for i, p in enumerate(partials)}
    for node in planning.all_nodes(shape):
        if node.startswith("r"):
            kids = planning.children(shape, node)
            # through the storage format, as in the pipeline
            results[node] = imaging.load_partial(imaging.dump_partial(
                imaging.combine(results[k] for k in kids)))
    root = results[shape.root]
    assert (root.x0, root.y0, root.width, root.height) == (0, 0, w, h)
    np.testing.assert_allclose(root.mean(), expected, rtol=1e-5, atol=1e-6)


def test_mean_refuses_uncovered_pixels():
    p = imaging.combine([imaging.from_pass(Tile(0, 0, 8, 8), 8, np.ones((8, 8, 1), np.float32)),
                         imaging.from_pass(Tile(16, 0, 8, 8), 8, np.ones((8, 8, 1), np.float32))])
    with pytest.raises(ValueError):
        p.mean()


def test_from_pass_checks_the_shape():
    with pytest.raises(ValueError):
        imaging.from_pass(Tile(0, 0, 8, 4), 8, np.zeros((8, 8, 1), np.float32))


def test_linear_display_is_aobench_clamp():
    v = np.array([[[-1.0], [0.0], [0.5], [1.0], [2.0]]], np.float32)
    # aobench: (int)(v * 255.5) clamped, so 0.5 → 127
    assert imaging.to_8bit(v, "linear").ravel().tolist() == [0, 0, 127, 255, 255]


def test_srgb_matches_the_standard_curve():
    # reference values of the sRGB transfer function (IEC 61966-2-1)
    lin = np.array([0.0, 0.0031308, 0.18, 0.5, 1.0])
    expected = np.array([0.0, 0.04045, 0.4613561, 0.7353569, 1.0])
    np.testing.assert_allclose(imaging.srgb_encode(lin), expected, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_and_jpeg_decode_to_the_display_values(channels):
    rng = np.random.default_rng(2)
    img = rng.random((20, 30, channels), dtype=np.float32)
    png = Image.open(io.BytesIO(imaging.encode(img, "png", "srgb")))
    assert png.size == (30, 20)
    decoded = np.asarray(png).reshape(20, 30, channels)
    np.testing.assert_array_equal(decoded, imaging.to_8bit(img, "srgb"))
    jpeg = Image.open(io.BytesIO(imaging.encode(img, "jpeg", "linear")))
    assert jpeg.format == "JPEG" and jpeg.size == (30, 20)


@pytest.mark.parametrize("channels", [1, 3])
def test_exr_keeps_linear_float(channels):
    import OpenEXR

    img = (np.random.default_rng(3).random((12, 7, channels)) * 10).astype(np.float32)
    data = imaging.encode(img, "exr", "srgb")
    path = f"/tmp/francine-test-{channels}.exr"
    with open(path, "wb") as f:
        f.write(data)
    with OpenEXR.File(path) as f:
        name = "Y" if channels == 1 else "RGB"
        got = f.channels()[name].pixels
    np.testing.assert_array_equal(got.reshape(img.shape), img)  # no tone mapping in EXR


def test_a_partial_written_before_fixed_point_is_read_as_its_passes():
    """A render in flight while a new version deploys: its float32 partials (no sum of
    squares) are read as fixed-point ones with the same mean."""
    rng = np.random.default_rng(3)
    old_sum = (rng.random((16, 24, 3)) * 2).astype(np.float32)  # two passes' sum
    count = np.full((2, 3), 2, np.float32)
    buf = io.BytesIO()
    np.savez(buf, origin=np.array([8, 0, 8], np.int64), sum=old_sum, count=count)
    for load in (imaging.load_partial, imaging.view_partial):
        p = load(buf.getvalue())
        assert p.sum.dtype == np.int64 and p.sq.shape == (16, 24, 1)
        np.testing.assert_allclose(p.mean(), old_sum / 2, rtol=1e-6)
        combined = imaging.combine([p, imaging.from_pass(Tile(8, 0, 24, 16), 8,
                                                         old_sum / 2)])
        np.testing.assert_allclose(combined.mean(), old_sum / 2, rtol=1e-6)


def test_a_one_pass_partial_is_stored_in_four_bytes_a_value_and_read_back_whole():
    rng = np.random.default_rng(5)
    pixels = rng.random((16, 16, 4), dtype=np.float32)
    one = imaging.from_pass(Tile(0, 0, 16, 16), 16, pixels)
    data = imaging.dump_partial(one)
    assert len(data) < 16 * 16 * 4 * 4 + 1024  # int32 sums, no squares
    with np.load(io.BytesIO(data)) as z:
        assert z["sum"].dtype == np.int32 and "sq" not in z.files
    for load in (imaging.load_partial, imaging.view_partial):
        back = load(data)
        np.testing.assert_array_equal(back.sum, one.sum)
        np.testing.assert_allclose(back.sq, one.sq, rtol=1e-5)
    two = imaging.combine([one, one])  # two passes: 64-bit sums, squares kept
    with np.load(io.BytesIO(imaging.dump_partial(two))) as z:
        assert "sq" in z.files
    big = imaging.combine([one] * 3)  # past 2^31: 64 bits
    with np.load(io.BytesIO(imaging.dump_partial(big))) as z:
        assert z["sum"].dtype == np.int64
    np.testing.assert_array_equal(imaging.load_partial(imaging.dump_partial(big)).sum,
                                  big.sum)
