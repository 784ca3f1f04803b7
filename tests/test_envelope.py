"""Decoding Pub/Sub push envelopes: ours decode, anything else is a clear 400."""

import base64
import json

import pytest

from francine.base import errors
from francine.domain.envelope import decode, require


def envelope(payload, **attributes):
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return {"message": {"data": data, "messageId": "42", "attributes": attributes},
            "subscription": "projects/p/subscriptions/s"}


def test_decodes_payload_attributes_and_id():
    m = decode(envelope({"a": 1}, type="produce"))
    assert (m.id, m.payload, m.type, m.dead_lettered) == ("42", {"a": 1}, "produce", False)


def test_recognises_dead_letters():
    m = decode(envelope({"a": 1}, type="produce", CloudPubSubDeadLetterSourceSubscription="s",
                        CloudPubSubDeadLetterSourceDeliveryCount="5"))
    assert m.dead_lettered and m.delivery_attempts == 5


@pytest.mark.parametrize("bad", [None, [], {"nomessage": 1}, {"message": "x"},
                                 {"message": {"data": "!!!"}},
                                 {"message": {"data": base64.b64encode(b"[1]").decode()}},
                                 {"message": {"data": base64.b64encode(b"{nope").decode()}}])
def test_rejects_what_is_not_ours(bad):
    with pytest.raises(errors.BadRequest):
        decode(bad)


def test_require_names_the_missing_field():
    with pytest.raises(errors.BadRequest, match="task_id"):
        require({"session_id": "s"}, "session_id", "task_id")
