"""Attaching resources to a session: stream, hash, check, store once, record.

The bytes are streamed to a temporary file while hashing (never held in memory whole),
the producer inspects what it will read (a malformed mesh is a 400 now, not a failed
task later), the object is stored under its SHA-256 unless it already is, and the
record is created; the same name with other bytes is a 409.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import tempfile
from collections.abc import Iterable

from francine import errors, producers
from francine.clients import Adapters
from francine.producers.base import SceneError

NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
MAX_NAME = 512


def check_name(name: object) -> str:
    if (not isinstance(name, str) or not NAME.match(name) or len(name) > MAX_NAME
            or any(part in (".", "..") for part in name.split("/"))):
        raise errors.BadRequest(
            "resource name: a relative path of letters, digits and ._-/ without '..'",
            "invalid_name")
    return name


def attach(ad: Adapters, sid: str, producer: str, name: str, chunks: Iterable[bytes],
           limit: int) -> tuple[dict, bool]:
    """Attach the bytes of ``chunks`` (at most ``limit``) as resource ``name``; returns
    (record, created)."""
    check_name(name)
    fd, tmp = tempfile.mkstemp(prefix="francine-resource-")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise errors.too_large("this resource", limit)
                digest.update(chunk)
                f.write(chunk)
        sha = digest.hexdigest()
        meta = inspect(producer, name, pathlib.Path(tmp))
        record = {"name": name, "sha256": sha, "size": size, "meta": meta}
        # Refuse before storing anything: a refused attach leaves no object behind.
        existing = {r["name"]: r["sha256"] for r in ad.store.list_resources(sid)}
        if name in existing and existing[name] != sha:
            raise errors.Conflict(
                f"resource {name!r} exists with other content (sha256 {existing[name]}); "
                "resources are immutable", "resource_immutable")
        if name not in existing and len(existing) >= ad.settings.max_resources:
            raise errors.Conflict(
                f"a session holds at most {ad.settings.max_resources} resources",
                "too_many_resources")
        stored_now = not ad.blobs.has_resource(sha)
        if stored_now:
            ad.blobs.put_resource(sha, pathlib.Path(tmp))
    finally:
        os.unlink(tmp)
    try:
        return record, ad.store.attach_resource(sid, record)
    except errors.FrancineError:
        if stored_now:  # a concurrent attach of other bytes under this name won
            ad.blobs.delete_resource(sha)
        raise


def inspect(producer: str, name: str, path: pathlib.Path) -> dict:
    check = getattr(producers.get(producer), "inspect_resource", None)
    if check is None:
        return {}
    try:
        return check(name, path) or {}
    except SceneError as e:
        raise errors.BadRequest(f"resource {name}: {e}", "invalid_resource") from e
