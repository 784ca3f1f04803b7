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

from francine import producers
from francine.base import errors
from francine.domain.producer import SceneError
from francine.ports import Adapters

#: A resource name is the user's own relative file name: any UTF-8 text but control
#: characters, backslashes and a leading or doubled ``/``, so that Blender's
#: ``//textures/Golden Palace 2, Old Bagan-1k.exr`` can be its own name. The OpenAPI
#: document publishes this pattern; ``check_name`` adds what a pattern cannot say.
NAME = re.compile(r"^[^/\\\x00-\x1f\x7f-\x9f]+(/[^/\\\x00-\x1f\x7f-\x9f]+)*$")
#: In UTF-8 bytes, as file systems count (the worker writes each name as a path).
MAX_NAME = 512
MAX_SEGMENT = 255


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a resource, or None."""
    if not name:
        return "it is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        return f"it is longer than {MAX_NAME} bytes of UTF-8"
    if "\\" in name:
        return "it holds a backslash: separate folders with '/'"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        return "it holds a control character"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "it is not valid UTF-8"
    if name.startswith("/"):
        return "it is absolute: name it relative to the session's folder"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "a folder in it is empty, '.' or '..'"
    if any(len(part.encode()) > MAX_SEGMENT for part in parts):
        return f"a folder or file name in it is longer than {MAX_SEGMENT} bytes"
    return None


def check_name(name: object) -> str:
    """``name`` if it can name a resource; otherwise a 400 that quotes it and says why."""
    problem = "it is not a string" if not isinstance(name, str) else name_problem(name)
    if problem is not None:
        shown = repr(name)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        raise errors.BadRequest(f"resource name {shown}: {problem}", "invalid_name")
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
                    raise errors.too_large(f"resource {name!r}", limit)
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
        raise errors.BadRequest(f"resource {name!r}: {e}", "invalid_resource") from e
