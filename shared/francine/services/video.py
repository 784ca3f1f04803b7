"""The preview video of an animation: its finished frames, in order, as an H.264 MP4.

Encoded with the ffmpeg binary that PyPI's ``imageio-ffmpeg`` ships in its wheel (no
system ffmpeg, no codec to build): frames go to it as raw 8-bit RGB on a pipe, and it
writes H.264 in ``yuv420p`` (what every browser and player decodes) at the scene's frame
rate. ``yuv420p`` halves the chroma resolution, so an odd width or height is padded by
one black pixel. Each frame is the image the farm stored for it (PNG, JPEG or EXR; an
EXR is shown as the viewer's preview shows it).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable

import numpy as np

#: A constant-quality encode good enough to judge a shot, small enough to stream.
QUALITY_CRF = "20"


def rgb_of_result(data: bytes, fmt: str, display: str) -> np.ndarray:
    """A frame's stored image as (height, width, 3) 8-bit sRGB."""
    from PIL import Image

    from francine.services.preview import png_of_result

    png = png_of_result(data, fmt, display) if fmt == "exr" else data
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def even(image: np.ndarray) -> np.ndarray:
    """``image`` padded with black to an even width and height (yuv420p needs both)."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)))


def mp4(frames: Iterable[np.ndarray], fps: float) -> bytes:
    """An H.264 MP4 (yuv420p) of ``frames`` ((h, w, 3) uint8, all of one size) at
    ``fps``; ValueError when there is no frame."""
    import imageio_ffmpeg

    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="francine-video-")
    os.close(fd)
    writer = None
    try:
        for frame in frames:
            frame = np.ascontiguousarray(even(frame), dtype=np.uint8)
            if writer is None:
                writer = imageio_ffmpeg.write_frames(
                    path, (frame.shape[1], frame.shape[0]), fps=fps, codec="libx264",
                    pix_fmt_in="rgb24", pix_fmt_out="yuv420p", macro_block_size=2,
                    output_params=["-crf", QUALITY_CRF, "-movflags", "+faststart"],
                    ffmpeg_log_level="error")
                writer.send(None)  # start the encoder
            writer.send(frame)
        if writer is None:
            raise ValueError("no finished frame yet")
        writer.close()
        writer = None
        with open(path, "rb") as f:
            return f.read()
    finally:
        if writer is not None:
            writer.close()
        os.unlink(path)


def probe(data: bytes) -> dict:
    """What a player sees of an MP4: codec, pixel format, size, fps, duration and the
    number of frames (decoded), for tests and checks."""
    import imageio_ffmpeg

    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="francine-probe-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        for attempt in range(3):
            try:
                reader = imageio_ffmpeg.read_frames(path)
                meta = next(reader)
                break
            except OSError:
                # ffmpeg's stderr, parsed for the meta data, may begin with a line that
                # gRPC's fork handler wrote in the child before it became ffmpeg.
                if attempt == 2:
                    raise
        count = sum(1 for _ in reader)
        return {"codec": meta.get("codec"), "pix_fmt": meta.get("pix_fmt"),
                "size": tuple(meta["size"]), "fps": meta["fps"],
                "duration": meta.get("duration"), "frames": count}
    finally:
        os.unlink(path)


def of_animation(ad, parent) -> str:
    """The stored name of the preview video of an animation's finished frames, encoded
    and stored the first time it is asked for with those frames (so it is rebuilt only
    when frames were added); NotFound while no frame has finished."""
    import hashlib

    from francine import producers
    from francine.base import errors
    from francine.domain.producer import resource_infos
    from francine.services import animation

    done = animation.done_frames(ad, parent)
    if not done:
        raise errors.NotFound(f"execution {parent.id} has no finished frame yet")
    key = hashlib.sha256(",".join(f"{ex.frame}={ex.result}" for ex in done).encode())
    name = ad.blobs.result_name(parent.session_id, parent.id,
                                f"video-{len(done)}-{key.hexdigest()[:12]}.mp4")
    if ad.blobs.result_size(name) is not None:
        return name
    producer = producers.get(parent.producer)
    fps = 24.0
    rate = getattr(producer, "frame_rate", None)
    if rate is not None:
        resources = resource_infos(ad.store.list_resources(parent.session_id))
        try:
            fps = rate(parent.scene, resources)
        except (KeyError, TypeError, ValueError):
            fps = 24.0  # the file's record predates the rate
    images = (rgb_of_result(ad.blobs.get_result(ex.result), parent.format, parent.display)
              for ex in done)
    ad.blobs.put_result(name, mp4(images, fps), "video/mp4")
    return name
