"""A small client of the REST API (used by the CLI, the tests and the benchmarks)."""

from __future__ import annotations

import hashlib
import json
import pathlib
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from francine.domain.records import FINAL


class ApiError(Exception):
    def __init__(self, status: int, body: dict | str):
        self.status = status
        self.body = body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.code = error.get("code")
        self.message = str(error.get("message", body))
        super().__init__(f"{status} {self.code}: {self.message}")


class Client:
    def __init__(self, api_url: str, api_key: str | None, timeout_s: float = 330.0):
        self.api_url = api_url.rstrip("/")
        self.session = requests.Session()
        # A kept-alive connection that the server closes as a request goes out is reset
        # (any server does that when its keep-alive ends): a request that changes
        # nothing, or the same thing again, is sent again on a new connection. A POST is
        # not (it is made safe to repeat by an Idempotency-Key, which the caller gives).
        retry = Retry(total=3, connect=3, read=2, status=0, backoff_factor=0.1,
                      allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
                      raise_on_status=False)
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(max_retries=retry))
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        resp = self.session.request(method, self.api_url + path,
                                    timeout=kwargs.pop("timeout", self.timeout_s), **kwargs)
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
            raise ApiError(resp.status_code, body)
        return resp

    def create_session(self, producer: str, scene: dict | None = None,
                       fmt: str = "png") -> dict:
        body = {"producer": producer, "format": fmt}
        if scene is not None:
            body["scene"] = scene
        return self.request("POST", "/v1/sessions", json=body).json()

    def sessions(self) -> list[dict]:
        return self.request("GET", "/v1/sessions").json()["sessions"]

    def get_session(self, sid: str) -> dict:
        return self.request("GET", f"/v1/sessions/{sid}").json()

    def delete_session(self, sid: str) -> None:
        self.request("DELETE", f"/v1/sessions/{sid}")

    def executions(self, sid: str) -> list[dict]:
        return self.request("GET", f"/v1/sessions/{sid}/executions").json()["executions"]

    def cancel(self, sid: str, eid: str) -> dict:
        return self.request("POST", f"/v1/sessions/{sid}/executions/{eid}:cancel").json()

    def events(self, sid: str, eid: str) -> Iterator[dict]:
        """The execution's status events (Server-Sent Events) until the stream ends."""
        for name, data in self.all_events(sid, eid):
            if name == "status":
                yield data

    def all_events(self, sid: str, eid: str) -> Iterator[tuple[str, dict]]:
        """(event, data) of every event of the execution's stream (``status``, an
        animation's ``frame``, ``timeout``...) until the stream ends."""
        resp = self.request("GET", f"/v1/sessions/{sid}/executions/{eid}/events",
                            stream=True, timeout=(10, 60))
        with resp:
            name, data = None, []
            for line in resp.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line:
                    if name and data:
                        yield name, json.loads("\n".join(data))
                    name, data = None, []

    def put_resource(self, sid: str, name: str, data: bytes) -> dict:
        # A resource name is the user's file name (spaces, commas, any letter): quoted.
        path = f"/v1/sessions/{sid}/resources/{quote(name, safe='/')}"
        return self.request("PUT", path, data=data).json()

    def execute(self, sid: str, parallel: int = 1, update: dict | None = None,
                tile: int | None = None, idempotency_key: str | None = None,
                **more) -> dict:
        """Start an execution; ``more``: other fields of the request (``frames``...)."""
        body = execution_body(parallel, update, tile, **more)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", f"/v1/sessions/{sid}/executions", json=body,
                            headers=headers).json()

    def estimate(self, sid: str, parallel: int = 1, tile: int | None = None, **more) -> dict:
        """The price of an execution (a ``dry_run``): nothing starts."""
        return self.request("POST", f"/v1/sessions/{sid}/executions",
                            json=execution_body(parallel, None, tile, dry_run=True, **more)
                            ).json()

    def execution(self, sid: str, eid: str) -> dict:
        return self.request("GET", f"/v1/sessions/{sid}/executions/{eid}").json()

    def extend(self, sid: str, eid: str, passes: int | None = None,
               until: dict | None = None, **caps) -> dict:
        """More passes on a done execution (``passes``, or waves ``until`` a noise
        target), under optional caps (``max_cost_usd``, ``max_cpu_seconds``): its status,
        running again."""
        body = {k: v for k, v in {"passes": passes, "until": until, **caps}.items()
                if v is not None}
        return self.request("POST", f"/v1/sessions/{sid}/executions/{eid}:extend",
                            json=body).json()

    def wait(self, sid: str, eid: str, timeout_s: float = 600.0, poll_s: float = 0.2,
             on_status: Callable[[dict], None] | None = None) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.execution(sid, eid)
            if on_status:
                on_status(status)
            if status["status"] in FINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {eid} still {status['status']} after "
                                   f"{timeout_s:.0f} s")
            time.sleep(poll_s)

    def result(self, sid: str, eid: str, frame: int | None = None) -> bytes:
        """The image (of one frame of an animation)."""
        params = {"frame": frame} if frame is not None else None
        return self.request("GET", f"/v1/sessions/{sid}/executions/{eid}/result",
                            params=params).content

    def frames(self, sid: str, eid: str) -> list[dict]:
        """An animation's frames: number, status and result URL of each."""
        return self.request("GET", f"/v1/sessions/{sid}/executions/{eid}/frames"
                            ).json()["frames"]

    def video(self, sid: str, eid: str) -> bytes:
        """An animation's preview video (H.264 MP4) of the frames finished so far."""
        return self.request("GET", f"/v1/sessions/{sid}/executions/{eid}/video").content


def execution_body(parallel: int, update: dict | None, tile: int | None, **more) -> dict:
    """An execution request's body: the fields given, the others left to their defaults."""
    body: dict = {"parallel": parallel, **more}
    if update is not None:
        body["update"] = update
    if tile is not None:
        body["tile"] = tile
    return body


def wave_fields(noise: float | None = None, max_passes: int | None = None,
                max_cost_usd: float | None = None, max_cpu_seconds: float | None = None,
                seed: int | None = None) -> dict:
    """The request fields of a noise target, spending caps and a seed, those given only
    (an execution's; :extend takes all but ``seed``)."""
    fields: dict = {}
    if noise is not None:
        fields["until"] = {"noise": noise,
                           **({"max_passes": max_passes} if max_passes is not None else {})}
    for name, value in (("max_cost_usd", max_cost_usd), ("max_cpu_seconds", max_cpu_seconds),
                        ("seed", seed)):
        if value is not None:
            fields[name] = value
    return fields


def load_scene_file(path: pathlib.Path, producer: str | None = None,
                    resources: dict[str, pathlib.Path] | None = None
                    ) -> tuple[str, dict, dict[str, pathlib.Path], str]:
    """A scene file: either {"producer": ..., "format"?: ..., "scene": {...},
    "resources": {name: path relative to the file}}, or a bare scene with the producer
    and resources given apart. Returns (producer, scene, resources, format)."""
    doc = json.loads(path.read_text())
    resources = dict(resources or {})
    if "producer" in doc:
        resources.update({name: (path.parent / rel).resolve()
                          for name, rel in doc.get("resources", {}).items()})
        return doc["producer"], doc.get("scene"), resources, doc.get("format", "png")
    if producer is None:
        raise ValueError(f"{path} is a bare scene: name its producer (--producer)")
    return producer, doc, resources, "png"


#: Bytes hashed at a time when a file goes through an upload session.
UPLOAD_CHUNK = 1 << 20


def attach_file(client, sid: str, name: str, path: pathlib.Path,
                direct_limit: int = 16 << 20) -> dict:
    """Client side: attach a local file, through an upload session when it is larger
    than ``direct_limit`` or when the api refuses it as too large for one request."""
    size = path.stat().st_size
    if size <= direct_limit:
        try:
            return client.put_resource(sid, name, path.read_bytes())
        except ApiError as e:
            if e.status != 413:
                raise
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(UPLOAD_CHUNK), b""):
            digest.update(chunk)
    body = {"name": name, "size": size, "sha256": digest.hexdigest()}
    upload = client.request("POST", f"/v1/sessions/{sid}/uploads", json=body).json()
    with open(path, "rb") as f:
        resp = requests.put(upload["upload_url"], data=f, timeout=client.timeout_s,
                            headers={"Content-Type": "application/octet-stream"})
    resp.raise_for_status()
    return client.request("POST", upload["finish"], json=body).json()
