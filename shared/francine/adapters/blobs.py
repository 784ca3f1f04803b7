"""Cloud Storage: resources by content hash, partials and results by deterministic name.

Every object is written once under a name that only one task produces: partials are
created with a create-only precondition (``if_generation_match=0``), so a retry or a
speculative copy that finds its partial stored writes nothing (and no object sees more
than one write, far within the one-write-per-second-per-object limit).

Uploads larger than a request are staged in the resources bucket (``uploads/...``) and
read back by the api; results larger than a response are served by URL
(``francine.services.uploads``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pathlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from francine.adapters import translated
from francine.base import errors
from francine.base.concurrency import fetched_in_order
from francine.base.config import Settings
from francine.ports import layout
from francine.ports.protocols import Area, StoredObject

#: Concurrent downloads of a reduction's inputs: they are on the critical path from the
#: last task to the image, and each object is a round trip.
FETCHERS = 8


class Blobs:
    """The blobs port (``francine.ports.protocols.Blobs``) over Cloud Storage."""

    def __init__(self, client, settings: Settings):
        self.client = client  # also reads external gs:// resources
        self._resources = client.bucket(settings.resources_bucket)
        self._partials = client.bucket(settings.partials_bucket)
        self._results = client.bucket(settings.results_bucket)
        self._areas = {"resources": self._resources, "partials": self._partials,
                       "results": self._results}

    def ensure_buckets(self) -> None:
        """Create the buckets where they do not exist (the local stack; in the cloud
        the Pulumi program owns them)."""
        from google.api_core import exceptions as gexc

        for bucket in (self._resources, self._partials, self._results):
            with contextlib.suppress(gexc.Conflict):
                self.client.create_bucket(bucket.name)

    # resources: content-addressed, shared by all sessions that attach the same bytes
    resource_name = staticmethod(layout.resource_name)

    def has_resource(self, sha256: str) -> bool:
        with translated("resource lookup"):
            return self._resources.blob(self.resource_name(sha256)).exists()

    def put_resource(self, sha256: str, path: pathlib.Path) -> None:
        with translated("resource upload"):
            self._resources.blob(self.resource_name(sha256)).upload_from_filename(str(path))

    def delete_resource(self, sha256: str) -> None:
        from google.api_core import exceptions as gexc

        with translated("resource deletion"), contextlib.suppress(gexc.NotFound):
            self._resources.blob(self.resource_name(sha256)).delete()

    def fetch_resource(self, sha256: str, dest: pathlib.Path) -> None:
        with translated("resource download"):
            self._resources.blob(self.resource_name(sha256)).download_to_filename(str(dest))

    # partials and results: one object per task, named after it
    partial_name = staticmethod(layout.partial_name)

    def put_partial(self, session_id: str, execution_id: str, node: str, data: bytes) -> bool:
        """Create the partial; False if it exists already (another copy of the task, or
        an earlier try of this one, stored it first: it is never written twice)."""
        from google.api_core import exceptions as gexc

        with translated("partial upload"):
            try:
                self._partials.blob(self.partial_name(session_id, execution_id, node)) \
                    .upload_from_string(data, content_type="application/octet-stream",
                                        if_generation_match=0)
            except gexc.PreconditionFailed:
                return False
        return True

    def get_partial(self, session_id: str, execution_id: str, node: str) -> bytes:
        with translated("partial download"):
            return self._partials.blob(
                self.partial_name(session_id, execution_id, node)).download_as_bytes()

    def get_partials(self, session_id: str, execution_id: str, nodes: list[str]) -> list[bytes]:
        with ThreadPoolExecutor(max_workers=max(1, min(FETCHERS, len(nodes)))) as pool:
            return list(pool.map(lambda n: self.get_partial(session_id, execution_id, n),
                                 nodes))

    def stream_partials(self, session_id: str, execution_id: str, nodes: list[str],
                        window: int) -> Iterator[bytes]:
        """The partials in order, at most ``window`` held or downloading at a time."""
        return fetched_in_order(lambda n: self.get_partial(session_id, execution_id, n),
                                nodes, window)

    result_name = staticmethod(layout.result_name)

    def put_result(self, name: str, data: bytes, content_type: str) -> None:
        with translated("result upload"):
            self._results.blob(name).upload_from_string(data, content_type=content_type)

    def get_result(self, name: str) -> bytes:
        with translated("result download"):
            return self._results.blob(name).download_as_bytes()

    def result_size(self, name: str) -> int | None:
        with translated("result lookup"):
            blob = self._results.get_blob(name)
        return None if blob is None else blob.size

    def result_url(self, name: str, ttl: dt.timedelta) -> str:
        """A URL that serves the result without the api: on the storage emulator its
        download URL; in the cloud a V4 signed URL valid ``ttl``, signed through IAM
        ``signBlob`` (there is no private key on Cloud Run) with the access token of
        the service's own account, which needs the Service Account Token Creator role
        on itself."""
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            return f"{emulator.rstrip('/')}/download/storage/v1/b/{self._results.name}/o/" \
                   f"{quote(name, safe='')}?alt=media"
        import google.auth
        from google.auth.transport.requests import Request

        with translated("result URL"):
            # The default credentials: a service account's (the api's own, on Cloud Run).
            credentials: Any = google.auth.default()[0]
            credentials.refresh(Request())
            return self._results.blob(name).generate_signed_url(
                version="v4", expiration=ttl, method="GET",
                service_account_email=credentials.service_account_email,
                access_token=credentials.token)

    # uploads: staged in the resources bucket, read back once the client says it is done
    def start_upload(self, name: str, size: int, origin: str | None) -> str:
        """Open a resumable upload session for object ``name``; returns its URL, where
        the client sends the bytes (one PUT, or chunks by the resumable protocol)."""
        with translated("upload session"):
            return self._resources.blob(name).create_resumable_upload_session(
                size=size, content_type="application/octet-stream", origin=origin)

    def fetch_upload(self, name: str, dest: pathlib.Path) -> None:
        """Download the staged object to ``dest``; NotFound if nothing was uploaded
        (the storage client removes ``dest`` when a download fails)."""
        with translated(f"upload {name}"):
            self._resources.blob(name).download_to_filename(str(dest))

    def delete_session(self, session_id: str) -> int:
        """Delete a session's partials and results; resources stay (they are shared by
        content hash with other sessions)."""
        deleted = 0
        with translated("session objects deletion"):
            for bucket, prefix in ((self._partials, f"partials/{session_id}/"),
                                   (self._results, f"results/{session_id}/")):
                for blob in list(self.client.list_blobs(bucket, prefix=prefix)):
                    blob.delete()
                    deleted += 1
        return deleted

    def list_objects(self, area: Area, prefix: str) -> Iterator[StoredObject]:
        """The objects of ``area`` whose names start with ``prefix``, page by page as
        they are listed (a caller may delete while it iterates)."""
        with translated(f"{area} listing"):
            for blob in self.client.list_blobs(self._areas[area], prefix=prefix):
                yield StoredObject(blob.name, blob.time_created)

    def delete_object(self, area: Area, name: str) -> bool:
        """Delete an object; False if it was gone already."""
        try:
            with translated(f"{area} deletion"):
                self._areas[area].blob(name).delete()
        except errors.NotFound:
            return False
        return True
