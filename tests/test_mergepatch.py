"""JSON Merge Patch against the test cases of RFC 7386, appendix A."""

import pytest

from francine.domain.mergepatch import merge_patch

RFC_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("target,patch,expected", RFC_CASES)
def test_rfc7386_appendix_a(target, patch, expected):
    assert merge_patch(target, patch) == expected


def test_inputs_are_not_modified():
    target = {"camera": {"fov": 40, "position": [0, 0, 1]}}
    patch = {"camera": {"fov": 60}}
    merge_patch(target, patch)
    assert target == {"camera": {"fov": 40, "position": [0, 0, 1]}}
    assert patch == {"camera": {"fov": 60}}
