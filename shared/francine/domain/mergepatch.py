"""JSON Merge Patch (RFC 7386): how an execution's ``update`` changes a scene."""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """Return ``target`` with ``patch`` applied; neither argument is modified.

    An object patch merges key by key, ``null`` deletes a key, and anything else
    (arrays included) replaces the target wholesale, exactly as the RFC's pseudo-code.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
