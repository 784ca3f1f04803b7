"""The preview video's encoder: what a player decodes of it (francine.services.video)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from francine.domain import imaging
from francine.services import video


def test_frames_become_an_h264_mp4_a_player_decodes():
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(4)]
    meta = video.probe(video.mp4(frames, 24))
    assert meta["codec"].startswith("h264") and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (64, 48) and meta["fps"] == 24 and meta["frames"] == 4


def test_an_odd_size_is_padded_to_even():
    meta = video.probe(video.mp4([np.zeros((31, 45, 3), np.uint8)] * 2, 12))
    assert meta["size"] == (46, 32) and meta["frames"] == 2


def test_no_frame_is_an_error():
    with pytest.raises(ValueError, match="no finished frame"):
        video.mp4([], 24)


@pytest.mark.parametrize("fmt", ["png", "exr"])
def test_a_stored_result_becomes_its_8bit_image(fmt):
    linear = np.zeros((8, 12, 4), np.float32)
    linear[..., :3], linear[..., 3] = 0.18, 1.0
    data = imaging.encode(linear, fmt, "srgb")
    rgb = video.rgb_of_result(data, fmt, "srgb")
    expected = np.asarray(Image.open(io.BytesIO(imaging.encode(linear, "png", "srgb")))
                          .convert("RGB"))
    assert rgb.shape == (8, 12, 3)
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= 1
