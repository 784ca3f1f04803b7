"""The local stack's Cloud Storage emulator: ``gcp-storage-emulator`` with create-only
uploads.

Cloud Storage refuses an upload with ``ifGenerationMatch=0`` when the object exists
(412 Precondition Failed): that is how Francine writes partials, so that two copies of
a task never write one object twice. The emulator ignores the parameter; this module
adds the check to its upload handler and runs it with the same arguments
(``python -m francine.local.storage_emulator start --port ... --in-memory``).
"""

from __future__ import annotations

import sys
from http import HTTPStatus


def _object_name(request) -> str | None:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict):
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else data
        return meta.get("name")
    return None


def create_only(insert):
    """Wrap the emulator's upload handler: ``ifGenerationMatch=0`` on an existing
    object answers 412 as Cloud Storage does, and stores nothing."""
    from gcp_storage_emulator.exceptions import NotFound

    def handler(request, response, storage, *args, **kwargs):
        match = request.query.get("ifGenerationMatch")
        name = _object_name(request)
        if match and match[0] == "0" and name:
            try:
                storage.get_file_obj(request.params["bucket_name"], name)
            except NotFound:
                pass
            else:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {
                    "code": 412, "message": "At least one of the pre-conditions you "
                    "specified did not hold.", "errors": [{
                        "reason": "conditionNotMet", "domain": "global",
                        "message": "Precondition Failed"}]}})
                return None
        return insert(request, response, storage, *args, **kwargs)

    return handler


def main(argv: list[str] | None = None) -> int:
    from gcp_storage_emulator.handlers import objects

    objects.insert = create_only(objects.insert)  # before the server module reads it
    from gcp_storage_emulator import __main__ as emulator

    return emulator.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
