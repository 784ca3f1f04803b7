"""Frame ranges as an animation request names them (francine.domain.frames)."""

from __future__ import annotations

import pytest

from francine.base import errors
from francine.domain import frames


@pytest.mark.parametrize("spec,step,expected", [
    ("1-4", None, [1, 2, 3, 4]), ("7", None, [7]), ("1..3", None, [1, 2, 3]),
    ("1-3,10", None, [1, 2, 3, 10]), (" 2 - 3 , 9", None, [2, 3, 9]),
    ("1-250", 100, [1, 101, 201]), ("-2--1", None, [-2, -1]), ([9, 1, 5], None, [1, 5, 9]),
])
def test_ranges(spec, step, expected):
    assert frames.parse(spec, step) == expected


@pytest.mark.parametrize("spec,step,words", [
    ("3-1", None, "ends before it starts"), ("a-b", None, "1-24"), ("", None, "1-24"),
    ("1-3,2", None, "frame 2 is named twice"), ([1, 1], None, "named twice"),
    ([], None, "a list"), ([1.5], None, "a list"), ({"start": 1}, None, "a list"),
    ([1, 2], 2, "step: applies to a range"), ("1-3", 0, "step: a whole number"),
    ("1-20000", None, "at most 10000"), ("0-2000000", 1000, "within"),
])
def test_mistakes_are_400s_naming_the_field(spec, step, words):
    with pytest.raises(errors.BadRequest) as e:
        frames.parse(spec, step)
    assert words in e.value.message and e.value.code == "invalid_field"


def test_frames_outside_the_scene():
    frames.check_within([1, 2, 3], 1, 3, "Shot")
    with pytest.raises(errors.BadRequest, match="frame 4 is outside scene 'Shot''s range 1..3"):
        frames.check_within([2, 4], 1, 3, "Shot")
