"""The blobs twin: objects by name in a dictionary, each write counted per name.

The three buckets share one dictionary here: the adapter's names never collide
(``resources/`` and ``uploads/`` in the resources bucket, ``partials/``, ``results/``),
and each object keeps its area and the time it was written, for listings. Upload and
result URLs are ``twin:`` URLs: ``receive`` and ``serve`` stand for the HTTP requests
a client sends to the ones Cloud Storage gives.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Iterator

from francine.base import errors
from francine.ports import layout
from francine.ports.protocols import Area, StoredObject
from francine.twins.meter import Meter

#: What the twin's upload and result URLs start with.
URL_PREFIX = "twin:"


class BlobsTwin:
    """The blobs port (``francine.ports.protocols.Blobs``) in memory."""

    partial_name = staticmethod(layout.partial_name)
    result_name = staticmethod(layout.result_name)
    resource_name = staticmethod(layout.resource_name)

    def __init__(self, meter: Meter | None = None, keep_bytes: bool = True):
        self.meter = meter or Meter()
        self.objects: dict[str, bytes] = {}
        #: name → (its area, when it was written)
        self.stored: dict[str, tuple[Area, dt.datetime]] = {}
        #: names of the staged uploads whose session is open
        self.uploads: set[str] = set()
        self.keep_bytes = keep_bytes  # the simulator keeps sizes only

    def _keep(self, area: Area, name: str, data: bytes) -> None:
        self.objects[name] = bytes(data) if self.keep_bytes else b""
        self.stored[name] = (area, self.meter.clock())

    def _put(self, area: Area, name: str, data: bytes) -> None:
        self.meter.op("upload", name)
        self._keep(area, name, data)

    def _get(self, name: str) -> bytes:
        self.meter.op("download")
        if name not in self.objects:
            raise errors.NotFound(f"{name}: not found")
        return self.objects[name]

    def _delete(self, name: str) -> bool:
        self.meter.op("delete")
        self.stored.pop(name, None)
        return self.objects.pop(name, None) is not None

    # resources
    def has_resource(self, sha256: str) -> bool:
        self.meter.op("lookup")
        return self.resource_name(sha256) in self.objects

    def put_resource(self, sha256: str, path: pathlib.Path) -> None:
        self._put("resources", self.resource_name(sha256), path.read_bytes())

    def fetch_resource(self, sha256: str, dest: pathlib.Path) -> None:
        dest.write_bytes(self._get(self.resource_name(sha256)))

    def delete_resource(self, sha256: str) -> None:
        self._delete(self.resource_name(sha256))

    # partials
    def put_partial(self, session_id: str, execution_id: str, node: str, data: bytes) -> bool:
        """Create-only, as the adapter's precondition: False (nothing written) if the
        partial exists."""
        name = self.partial_name(session_id, execution_id, node)
        self.meter.op("upload")  # the request's time; the check and the write end it
        if name in self.objects:
            return False  # refused: nothing written
        self._keep("partials", name, data)
        if self.meter.record_writes:
            self.meter.writes[name].append(self.meter.clock().timestamp())
        return True

    def get_partial(self, session_id: str, execution_id: str, node: str) -> bytes:
        return self._get(self.partial_name(session_id, execution_id, node))

    def get_partials(self, session_id: str, execution_id: str, nodes: list[str]) -> list[bytes]:
        self.meter.op(f"download_batch:{len(nodes)}")
        return [self.objects[self.partial_name(session_id, execution_id, n)]
                if self.partial_name(session_id, execution_id, n) in self.objects
                else self._get(self.partial_name(session_id, execution_id, n))
                for n in nodes]

    def stream_partials(self, session_id: str, execution_id: str, nodes: list[str],
                        window: int) -> Iterator[bytes]:
        # The objects are in memory already: one batch, as the adapter's overlapping
        # downloads cost about one round trip each window.
        return iter(self.get_partials(session_id, execution_id, nodes))

    # results
    def put_result(self, name: str, data: bytes, content_type: str) -> None:
        self._put("results", name, data)

    def get_result(self, name: str) -> bytes:
        return self._get(name)

    def result_size(self, name: str) -> int | None:
        self.meter.op("lookup")
        return len(self.objects[name]) if name in self.objects else None

    def result_url(self, name: str, ttl: dt.timedelta) -> str:
        return f"{URL_PREFIX}{name}"

    def serve(self, url: str) -> bytes:
        """What a GET of a result URL answers."""
        return self._get(url.removeprefix(URL_PREFIX))

    # uploads
    def start_upload(self, name: str, size: int, origin: str | None) -> str:
        self.meter.op("upload_session")
        self.uploads.add(name)
        return f"{URL_PREFIX}{name}"

    def receive(self, url: str, data: bytes) -> None:
        """What a PUT of the bytes to an upload URL does."""
        name = url.removeprefix(URL_PREFIX)
        if name not in self.uploads:
            raise errors.NotFound(f"no upload session at {url}")
        self.uploads.discard(name)
        self._put("resources", name, data)

    def fetch_upload(self, name: str, dest: pathlib.Path) -> None:
        dest.write_bytes(self._get(name))

    # deletion
    def delete_session(self, session_id: str) -> int:
        prefixes = (f"partials/{session_id}/", f"results/{session_id}/")
        return sum(self._delete(name) for name in list(self.objects)
                   if name.startswith(prefixes))

    def list_objects(self, area: Area, prefix: str) -> Iterator[StoredObject]:
        self.meter.op("list")
        # As a bucket lists them: by name; a snapshot, so the caller may delete.
        found = sorted((name, created) for name, (where, created) in self.stored.items()
                       if where == area and name.startswith(prefix))
        return iter([StoredObject(name, created) for name, created in found])

    def delete_object(self, area: Area, name: str) -> bool:
        if self.stored.get(name, (None,))[0] != area:
            return False
        return self._delete(name)
