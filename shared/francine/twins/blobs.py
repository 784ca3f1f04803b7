"""The blobs twin: objects by name in a dictionary, each write counted per name."""

from __future__ import annotations

from francine import errors
from francine.adapters.blobs import Blobs
from francine.twins import Meter


class BlobsTwin:
    partial_name = staticmethod(Blobs.partial_name)
    result_name = staticmethod(Blobs.result_name)

    def __init__(self, meter: Meter | None = None, keep_bytes: bool = True):
        self.meter = meter or Meter()
        self.objects: dict[str, bytes] = {}
        self.keep_bytes = keep_bytes  # the simulator keeps sizes only

    def _put(self, name: str, data: bytes) -> None:
        self.meter.op("upload", name)
        self.objects[name] = bytes(data) if self.keep_bytes else b""

    def _get(self, name: str) -> bytes:
        self.meter.op("download")
        if name not in self.objects:
            raise errors.NotFound(f"{name}: not found")
        return self.objects[name]

    def put_partial(self, session_id: str, execution_id: str, node: str, data: bytes) -> bool:
        """Create-only, as the adapter's precondition: False (nothing written) if the
        partial exists."""
        name = self.partial_name(session_id, execution_id, node)
        self.meter.op("upload")  # the request's time; the check and the write end it
        if name in self.objects:
            return False  # refused: nothing written
        self.objects[name] = bytes(data) if self.keep_bytes else b""
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

    def put_result(self, name: str, data: bytes, content_type: str) -> None:
        self._put(name, data)

    def get_result(self, name: str) -> bytes:
        return self._get(name)
