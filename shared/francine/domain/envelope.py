"""Decoding Pub/Sub messages as they reach our handlers (push requests or CloudEvents)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from francine.base import errors

DEAD_LETTER_ATTRIBUTE = "CloudPubSubDeadLetterSourceSubscription"
#: What a message asks for (its ``kind``): render a production task, a task is done
#: (for the reducer), an execution's status changed (for other systems).
PRODUCE = "produce"
TASK_DONE = "task_done"
EXECUTION_STATUS = "execution_status"


@dataclass(frozen=True)
class Message:
    id: str
    payload: dict
    attributes: dict

    @property
    def type(self) -> str | None:
        return self.attributes.get("type")

    @property
    def dead_lettered(self) -> bool:
        """Pub/Sub forwarded this message to a dead-letter topic after its last attempt."""
        return DEAD_LETTER_ATTRIBUTE in self.attributes

    @property
    def delivery_attempts(self) -> int:
        try:
            return int(self.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount", 0))
        except ValueError:
            return 0


def decode(envelope: object) -> Message:
    """The message of a push body ``{"message": {...}, "subscription": ...}`` (also the
    data of a Pub/Sub CloudEvent). ``BadRequest`` if it is not one of ours."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        raise errors.BadRequest("not a Pub/Sub push envelope", "bad_envelope")
    message = envelope["message"]
    try:
        payload = json.loads(base64.b64decode(message.get("data") or "", validate=True))
    except (binascii.Error, ValueError) as e:
        raise errors.BadRequest(f"message data is not base64 JSON: {e}", "bad_envelope") from e
    if not isinstance(payload, dict):
        raise errors.BadRequest("message data is not a JSON object", "bad_envelope")
    attributes = message.get("attributes") or {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    return Message(message_id, payload, dict(attributes))


def task_message(session_id: str, execution_id: str, task_id: str,
                 piece: str | None = None) -> dict:
    """The payload of a production task's message; ``piece`` ("piece/pieces") names a
    band of a speculative copy cut into pieces."""
    payload = {"session_id": session_id, "execution_id": execution_id, "task_id": task_id}
    if piece is not None:
        payload["piece"] = piece
    return payload


#: What an id in a message may be: a document id of the store and a part of an object
#: name (no "/", no "." or "..", no reserved "__...__"), as every id Francine makes is.
ID = re.compile(r"(?!\.\.?$)(?!__.*__$)[A-Za-z0-9._-]{1,128}")


def require(payload: dict, *fields: str) -> list[str]:
    """The id ``fields`` of a message; BadRequest (acknowledged, logged, never retried)
    if one is missing or could not be an id."""
    values = []
    for f in fields:
        v = payload.get(f)
        if not isinstance(v, str) or not v:
            raise errors.BadRequest(f"message lacks {f!r}", "bad_envelope")
        if not ID.fullmatch(v):
            raise errors.BadRequest(f"message's {f!r} is not an id: {v[:80]!r}", "bad_envelope")
        values.append(v)
    return values
