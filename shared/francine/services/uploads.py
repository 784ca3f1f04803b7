"""Files and images larger than a request or a response can carry.

Cloud Run and 2nd-gen functions cap request and response bodies at 32 MiB, while a
``.blend`` with packed textures is often hundreds of MB and a 4K EXR about 130 MB.

- **Uploads.** ``POST /v1/sessions/{sid}/uploads`` with ``{"name", "size", "sha256"}``
  opens a Cloud Storage resumable upload session for an object of the session's own
  (``uploads/{sid}/{id}``) and answers its URL; the client sends the bytes there (one
  ``PUT``, or in chunks by the resumable protocol), then ``POST .../uploads/{id}:finish``
  with the same fields. The api reads the object back, checks its size and SHA-256
  against the declared ones, and only then attaches it like any resource (inspection,
  content-addressed storage, record); the staging object is deleted either way.
- **Results.** A result larger than ``FRANCINE_MAX_RESPONSE_BYTES`` is answered with a
  ``307`` to a URL that serves it directly from Cloud Storage: a V4 signed URL valid for
  15 minutes in the cloud (signed through IAM ``signBlob`` with the service's own
  account, which needs the Service Account Token Creator role on itself), and the
  storage emulator's download URL on the local stack.

The storage side of both (upload sessions, staged objects, result URLs) is the blobs
port's (``francine.ports.protocols.UploadBlobs``, ``ResultBlobs``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import pathlib
import re
import tempfile
import uuid

from francine.base import errors
from francine.ports import Adapters
from francine.services import resources

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SIGNED_URL_TTL = dt.timedelta(minutes=15)
CHUNK = 1 << 20
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def staging_name(sid: str, upload_id: str) -> str:
    return f"uploads/{sid}/{upload_id}"


def declared(ad: Adapters, body: dict) -> tuple[str, int, str]:
    unknown = set(body) - {"name", "size", "sha256"}
    if unknown:
        raise errors.BadRequest(f"unknown field(s): {sorted(unknown)}", "invalid_field")
    name = resources.check_name(body.get("name"))
    size = body.get("size")
    limit = ad.settings.max_resource_bytes
    if type(size) is not int or not 0 <= size <= limit:
        raise errors.BadRequest(f"size: an integer of bytes in 0..{limit}", "invalid_field")
    sha = body.get("sha256")
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise errors.BadRequest("sha256: 64 lowercase hex digits", "invalid_field")
    return name, size, sha


def start(ad: Adapters, sid: str, body: dict, origin: str | None = None) -> dict:
    """Open an upload session for one file; answers where to send the bytes."""
    name, size, sha = declared(ad, body)
    upload_id = uuid.uuid4().hex
    url = ad.blobs.start_upload(staging_name(sid, upload_id), size, origin)
    return {"id": upload_id, "name": name, "size": size, "sha256": sha,
            "upload_url": url, "method": "PUT",
            "finish": f"/v1/sessions/{sid}/uploads/{upload_id}:finish"}


def finish(ad: Adapters, sid: str, producer: str, upload_id: str,
           body: dict) -> tuple[dict, bool]:
    """Verify the uploaded object against what was declared, then attach it."""
    if not UPLOAD_ID.match(upload_id):
        raise errors.NotFound("no such upload")
    name, size, sha = declared(ad, body)
    staged = staging_name(sid, upload_id)
    fd, tmp = tempfile.mkstemp(prefix="francine-upload-")
    os.close(fd)
    try:
        try:
            ad.blobs.fetch_upload(staged, pathlib.Path(tmp))
        except errors.NotFound:
            raise errors.NotFound(f"upload {upload_id}: nothing was uploaded (or it was "
                                  "finished already)") from None
        path = pathlib.Path(tmp)
        got_size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        if got_size != size or digest.hexdigest() != sha:
            raise errors.BadRequest(
                f"upload {upload_id}: received {got_size} bytes with sha256 "
                f"{digest.hexdigest()}, declared {size} bytes with sha256 {sha}",
                "upload_mismatch")
        with open(path, "rb") as f:
            return resources.attach(ad, sid, producer, name,
                                    iter(lambda: f.read(CHUNK), b""),
                                    ad.settings.max_resource_bytes)
    finally:
        # The storage client removes its destination file when a download fails.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        ad.blobs.delete_object("resources", staged)


def result_size(ad: Adapters, name: str) -> int | None:
    return ad.blobs.result_size(name)


def result_url(ad: Adapters, name: str) -> str:
    """A short-lived URL that serves the result object without the api."""
    return ad.blobs.result_url(name, SIGNED_URL_TTL)
