"""The preview of a finished EXR render: every channel layout the OpenEXR binding may
hand back for our results (the blender producer's RGBA, the ao renderer's RGB or Y,
channels of mixed pixel types that the binding cannot group) becomes the PNG a viewer
shows, with the sRGB curve applied to straight (unpremultiplied) colour.

The expected pixels are computed here from IEC 61966-2-1, not by the project's code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from francine.domain import imaging
from francine.services.preview import png_of_result

#: Premultiplied linear RGBA, as Cycles writes it: opaque primaries and greys, a
#: half-transparent pixel, an empty one (alpha 0), and a value above 1 that clips.
RGBA = np.array([[[0.18, 0.18, 0.18, 1.0], [0.5, 0.0, 1.0, 1.0], [0.09, 0.25, 0.0, 0.5]],
                 [[0.0, 0.0, 0.0, 0.0], [0.0031308, 0.05, 0.8, 1.0], [4.0, 0.2, 0.01, 1.0]]],
                np.float32)


def srgb_8bit(linear) -> np.ndarray:
    """IEC 61966-2-1's encoding of linear light in 0..1, to the nearest of 256 levels."""
    v = np.clip(np.asarray(linear, np.float64), 0.0, 1.0)
    encoded = np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)
    return np.round(encoded * 255)


def expected_rgba(premultiplied: np.ndarray) -> np.ndarray:
    """8-bit straight-alpha sRGB of premultiplied linear RGBA (alpha stays linear)."""
    alpha = premultiplied[..., 3:4].astype(np.float64)
    straight = np.divide(premultiplied[..., :3], alpha, out=np.zeros((*alpha.shape[:-1], 3)),
                         where=alpha > 0)
    return np.concatenate([srgb_8bit(straight), np.round(alpha * 255)], axis=-1)


def pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image, np.float64)


def write_exr(channels: dict, tmp_path) -> bytes:
    """An EXR of these channels exactly as given (names and pixel types)."""
    import OpenEXR

    # The binding reads arrays as contiguous memory: a strided view would mix pixels.
    channels = {name: np.ascontiguousarray(a) for name, a in channels.items()}

    path = tmp_path / "result.exr"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))
    return path.read_bytes()


def test_the_published_anchors_of_the_reference_curve():
    # 18 % grey is 118, linear 0.5 is 188; the linear toe ends at 0.0031308 (10).
    assert srgb_8bit([0.0, 0.0031308, 0.18, 0.5, 1.0]).tolist() == [0, 10, 118, 188, 255]


def test_a_blender_rgba_result_previews_as_straight_srgb():
    data = imaging.encode(RGBA, "exr", "srgb")  # what the blender producer stores
    got = pixels(png_of_result(data, "exr", "srgb"))
    assert got.shape == (2, 3, 4)
    # One level apart at most: the project quantises with (int)(v * 255.5), not rounding.
    np.testing.assert_allclose(got, expected_rgba(RGBA), atol=1)
    assert got[1, 0, 3] == 0 and got[0, 2, 3] in (127, 128)
    assert got[0, 0, :3].tolist() in ([117] * 3, [118] * 3)  # 18 % grey


@pytest.mark.parametrize("layout", ["RGB", "Y"])
def test_rgb_and_grey_results_preview_as_srgb(layout):
    linear = RGBA[..., :3] if layout == "RGB" else RGBA[..., 1:2]
    got = pixels(png_of_result(imaging.encode(linear, "exr", "srgb"), "exr", "srgb"))
    expected = srgb_8bit(linear)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1)


def test_channels_of_mixed_pixel_types_are_read_one_by_one(tmp_path):
    # Float colour and a half alpha: the binding refuses to group them into "RGBA".
    rgba = RGBA.copy()
    rgba[0, 2] = [0.125, 0.25, 0.0, 0.5]  # exact in half precision too
    data = write_exr({"R": rgba[..., 0], "G": rgba[..., 1], "B": rgba[..., 2],
                      "A": rgba[..., 3].astype(np.float16)}, tmp_path)
    got = pixels(png_of_result(data, "exr", "srgb"))
    np.testing.assert_allclose(got, expected_rgba(rgba), atol=1)


def test_grey_with_alpha_previews_as_rgba(tmp_path):
    grey = RGBA[..., 1]
    alpha = RGBA[..., 3]
    got = pixels(png_of_result(write_exr({"Y": grey, "A": alpha}, tmp_path), "exr", "srgb"))
    rgba = np.stack([grey, grey, grey, alpha], axis=-1)
    np.testing.assert_allclose(got, expected_rgba(rgba), atol=1)


def test_an_exr_without_colour_channels_names_what_it_has(tmp_path):
    data = write_exr({"Z": np.ones((2, 2), np.float32)}, tmp_path)
    with pytest.raises(ValueError, match="'Z'"):
        png_of_result(data, "exr", "srgb")


def test_the_preview_route_of_a_finished_blender_exr_render(client, tmp_path):
    pytest.importorskip("bpy")
    from francine.producers.blender import examples

    examples.build(tmp_path / "ball.blend", 24, 16)
    sid = client.create_session("blender", {"blend": "ball.blend", "samples": 4}, "exr")["id"]
    client.put_resource(sid, "ball.blend", (tmp_path / "ball.blend").read_bytes())
    eid = client.execute(sid, parallel=1)["id"]
    assert client.wait(sid, eid)["status"] == "done"
    import OpenEXR

    (tmp_path / "result.exr").write_bytes(client.result(sid, eid))
    with OpenEXR.File(str(tmp_path / "result.exr")) as f:
        assert list(f.channels()) == ["RGBA"]  # the layout that raised KeyError
        rgba = np.asarray(f.channels()["RGBA"].pixels, np.float32)
    resp = client.request("GET", f"/v1/sessions/{sid}/executions/{eid}/preview")
    assert resp.headers["X-Francine-Final"] == "1"
    got = pixels(resp.content)
    assert got.shape == (16, 24, 4)
    np.testing.assert_allclose(got, expected_rgba(rgba), atol=1)
    assert got[..., :3].std() > 5  # a picture, not a flat colour

