"""Cloud Storage: resources by content hash, partials and results by deterministic name.

Every object is written once under a name that only one task produces: partials are
created with a create-only precondition (``if_generation_match=0``), so a retry or a
speculative copy that finds its partial stored writes nothing (and no object sees more
than one write, far within the one-write-per-second-per-object limit).
"""

from __future__ import annotations

import contextlib
import pathlib
from concurrent.futures import ThreadPoolExecutor

from francine.adapters import translated
from francine.config import Settings

#: Concurrent downloads of a reduction's inputs: they are on the critical path from the
#: last task to the image, and each object is a round trip.
FETCHERS = 8


class Blobs:
    def __init__(self, client, settings: Settings):
        self.client = client  # also reads external gs:// resources
        self._resources = client.bucket(settings.resources_bucket)
        self._partials = client.bucket(settings.partials_bucket)
        self._results = client.bucket(settings.results_bucket)

    def ensure_buckets(self) -> None:
        """Create the buckets where they do not exist (the local stack; in the cloud
        the Pulumi program owns them)."""
        from google.api_core import exceptions as gexc

        for bucket in (self._resources, self._partials, self._results):
            with contextlib.suppress(gexc.Conflict):
                self.client.create_bucket(bucket.name)

    # resources: content-addressed, shared by all sessions that attach the same bytes
    @staticmethod
    def resource_name(sha256: str) -> str:
        return f"resources/{sha256}"

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
    @staticmethod
    def partial_name(session_id: str, execution_id: str, node: str) -> str:
        return f"partials/{session_id}/{execution_id}/{node}.npz"

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

    @staticmethod
    def result_name(session_id: str, execution_id: str, extension: str) -> str:
        return f"results/{session_id}/{execution_id}.{extension}"

    def put_result(self, name: str, data: bytes, content_type: str) -> None:
        with translated("result upload"):
            self._results.blob(name).upload_from_string(data, content_type=content_type)

    def get_result(self, name: str) -> bytes:
        with translated("result download"):
            return self._results.blob(name).download_as_bytes()

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
