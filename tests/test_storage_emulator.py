"""The local stack's fast parser of multipart uploads against the emulator's own
(the standard library's e-mail parser), on bodies built by the Cloud Storage client."""

from __future__ import annotations

import json
import random
from email.parser import BytesParser

import pytest
from google.cloud.storage._media._upload import construct_multipart_request

from francine.tools.local.storage_emulator import split_related


def emulator_parse(content_type: str, body: bytes) -> dict:
    """What gcp_storage_emulator.server._read_data returns for a multipart upload."""
    msg = BytesParser().parsebytes(bytes("Content-Type:" + content_type + "\r\n", "utf-8")
                                   + body)
    payload = msg.get_payload()
    return {"meta": json.loads(payload[0].get_payload()),
            "content": payload[1].get_payload(decode=True),
            "content-type": payload[1].get_content_type()}


def client_body(data: bytes, metadata: dict, content_type: str) -> tuple[str, bytes]:
    body, boundary = construct_multipart_request(data, metadata, content_type)
    return f'multipart/related; boundary="{boundary.decode()}"', body


@pytest.mark.parametrize("data", [
    b"",
    b"x",
    b"\r\n",
    b"--\r\n--\r\n\r\n",
    b"line one\r\nline two\n\rline three\r\n\r\n",
    bytes(range(256)) * 64,
    random.Random(1).randbytes(512 * 1024),
])
@pytest.mark.parametrize("content_type", ["application/octet-stream", "image/PNG",
                                          "text/plain; charset=utf-8"])
def test_the_fast_parser_reads_what_the_emulator_reads(data, content_type):
    ct, body = client_body(data, {"name": "partials/s/e/p0.npz", "metadata": {"k": "é"}},
                           content_type)
    ours = split_related(ct, body)
    assert ours == emulator_parse(ct, body)
    assert ours["content"] == data


def test_what_it_does_not_handle_goes_to_the_emulator_parser():
    ct, body = client_body(b"abc", {"name": "x"}, "application/octet-stream")
    assert split_related("multipart/mixed; boundary=b", body) is None
    assert split_related("multipart/related", body) is None  # no boundary
    assert split_related(ct, body[:-10]) is None  # no closing delimiter
    encoded = body.replace(b"content-type: application/octet-stream",
                           b"content-type: application/octet-stream\r\n"
                           b"content-transfer-encoding: base64")
    assert split_related(ct, encoded) is None
