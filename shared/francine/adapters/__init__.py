"""Small adapters around the Google Cloud clients; SDK errors become francine.base.errors."""

from __future__ import annotations

import contextlib

from francine.base import errors


@contextlib.contextmanager
def translated(what: str):
    """Map google.api_core exceptions raised inside to the francine.base.errors family."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except gexc.NotFound as e:
        raise errors.NotFound(f"{what}: not found") from e
    except (gexc.AlreadyExists, gexc.Conflict, gexc.FailedPrecondition) as e:
        raise errors.Conflict(f"{what}: {e.message}") from e
    except gexc.InvalidArgument as e:
        # The request itself is wrong (a document over 1 MiB, say): retrying cannot help.
        raise errors.BadRequest(f"{what}: {e.message}", "invalid_argument") from e
    except gexc.GoogleAPIError as e:
        raise errors.TransientError(f"{what}: {e}") from e
