"""Frame ranges: what an animation request names, read once for the api and the CLI.

``"1-250"`` (inclusive), ``"7"``, ``"1..24"``, a comma list of those (``"1-3,10"``), an
optional ``step`` over each range (``"1-250"`` with step 10: 1, 11, ... 241), or a JSON
list of frame numbers. The frames are rendered, reported and numbered in ascending order;
naming one twice is a mistake, not a request to render it twice.
"""

from __future__ import annotations

import re

from francine.base import errors

#: Blender's frame numbers (``MAXFRAME`` is 1,048,574).
MAX_FRAME = 1_048_574
#: Frames one execution may render (each has its own reduction tree and image).
MAX_FRAMES = 10_000
FORMS = "a frame (5), a range (1-24 or 1..24), a comma list of them (1-3,10), or a list"
PART = re.compile(r"\s*(-?\d+)\s*(?:(?:-|\.\.)\s*(-?\d+))?\s*")


def _bad(field: str, message: str) -> errors.BadRequest:
    return errors.BadRequest(f"{field}: {message}", "invalid_field")


def parse(spec: object, step: int | None = None, field: str = "frames") -> list[int]:
    """The frame numbers ``spec`` names, ascending; a 400 naming ``field`` otherwise."""
    if step is not None and (type(step) is not int or step < 1):
        raise _bad("step", "a whole number of frames, at least 1")
    if isinstance(spec, list):
        if step is not None:
            raise _bad("step", "applies to a range, not to a list of frames")
        if not spec or not all(type(f) is int for f in spec):
            raise _bad(field, f"expected {FORMS}")
        frames = list(spec)
    elif isinstance(spec, str):
        frames = []
        for part in spec.split(","):
            m = PART.fullmatch(part)
            if m is None:
                raise _bad(field, f"{part.strip()!r} is not {FORMS}")
            first = int(m.group(1))
            last = int(m.group(2)) if m.group(2) is not None else first
            if last < first:
                raise _bad(field, f"{part.strip()!r} ends before it starts")
            if (last - first) // (step or 1) + 1 > MAX_FRAMES:
                raise _bad(field, f"at most {MAX_FRAMES} frames in one execution")
            frames.extend(range(first, last + 1, step or 1))
    else:
        raise _bad(field, f"expected {FORMS}")
    if len(frames) > MAX_FRAMES:
        raise _bad(field, f"at most {MAX_FRAMES} frames in one execution")
    out = sorted(frames)
    twice = [a for a, b in zip(out, out[1:], strict=False) if a == b]
    if twice:
        raise _bad(field, f"frame {twice[0]} is named twice")
    if out[0] < -MAX_FRAME or out[-1] > MAX_FRAME:
        raise _bad(field, f"frames are within -{MAX_FRAME}..{MAX_FRAME}")
    return out


def check_within(frames: list[int], first: int, last: int, scene: str) -> None:
    """Every frame within the scene's range (a 400 naming the first one outside)."""
    outside = [f for f in frames if not first <= f <= last]
    if outside:
        raise _bad("frames", f"frame {outside[0]} is outside scene {scene!r}'s range "
                             f"{first}..{last}")
