"""Logs as Cloud Logging reads them, and malformed push messages acknowledged (not
retried into the dead-letter topic) and logged."""

from __future__ import annotations

import base64
import json
import logging
import pathlib
import time

import requests

from francine.base import logs


def test_a_line_is_json_with_severity_labels_and_trace():
    formatter = logs.CloudFormatter("proj")
    record = logging.LogRecord("francine.worker", logging.WARNING, __file__, 1,
                               "rendered %s", ("p3",), None)
    with logs.context(trace=logs.trace_id("abc123/456;o=1"), execution_id="e1"):
        with logs.context(task_id="t1", node=None):
            line = json.loads(formatter.format(record))
        outer = json.loads(formatter.format(record))
    assert line["severity"] == "WARNING" and line["message"] == "rendered p3"
    assert line[logs.LABELS_KEY] == {"execution_id": "e1", "task_id": "t1"}
    assert line[logs.TRACE_KEY] == "projects/proj/traces/abc123"
    assert outer[logs.LABELS_KEY] == {"execution_id": "e1"}  # the inner context ended
    plain = json.loads(formatter.format(record))
    assert logs.LABELS_KEY not in plain and logs.TRACE_KEY not in plain


def test_the_request_log_is_one_json_entry_with_http_request_and_trace():
    from francine.handlers.api import requestlog

    class Request:
        method, path = "POST", "/v1/sessions"
        headers = {"X-Cloud-Trace-Context": "cafe/9;o=1"}
        environ = {requestlog.USER: "u1"}

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    keep = Keep()
    requestlog.log.addHandler(keep)
    try:
        requestlog.log_request(Request(), 503, 0.25)
    finally:
        requestlog.log.removeHandler(keep)
    line = json.loads(logs.CloudFormatter("proj").format(records[-1]))
    assert line["severity"] == "WARNING" and line["message"] == "POST /v1/sessions 503 250.0 ms"
    assert line["httpRequest"] == {"requestMethod": "POST", "requestUrl": "/v1/sessions",
                                   "status": 503, "latency": "0.250000s"}
    assert line["user"] == "u1"


def test_a_trace_is_read_from_either_header():
    assert logs.trace_of({"X-Cloud-Trace-Context": "abc/1;o=1"}) == "abc"
    w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert logs.trace_of({"traceparent": w3c}) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert logs.trace_of({"traceparent": "garbage"}) is None and logs.trace_of({}) is None


def test_ids_are_taken_from_what_a_payload_names():
    assert logs.ids_of({"session_id": "s", "execution_id": "e", "x": 1, "node": 3}) == {
        "session_id": "s", "execution_id": "e"}
    assert logs.ids_of("not a dict") == {}


def push_body(payload: dict) -> bytes:
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps({"message": {"data": data, "messageId": "m2"}}).encode()


def log_lines(stack, name: str) -> list[dict]:
    text = (pathlib.Path(stack.info["logs"]) / f"{name}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_malformed_pushes_are_acknowledged_and_logged(stack):
    worker = stack.info["workers"][0]
    # ids that could not be ids (a "/" would be read as a path in the store)
    poison = [push_body({"session_id": "a/b", "execution_id": "e", "task_id": "t-p0"}),
              push_body({"session_id": "s", "execution_id": "..", "task_id": "t-p0"})]
    for body in (b"not json", json.dumps({"message": {"data": "%%%"}}).encode(),
                 json.dumps({"message": {"data": "e30=", "messageId": "m1"}}).encode(),
                 *poison):
        resp = requests.post(worker, data=body, headers={
            "Content-Type": "application/json", "X-Cloud-Trace-Context": "feed/1;o=1"},
            timeout=30)
        assert resp.status_code == 200, resp.text  # acknowledged: never dead-lettered
        assert resp.json()["outcome"] == "dropped"
    resp = requests.post(stack.info["reducer_url"], data=b"{}", headers={
        "Content-Type": "application/json", "ce-id": "x1", "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/t"}, timeout=30)
    assert resp.status_code == 200, resp.text
    event = {"message": {"data": base64.b64encode(json.dumps(
        {"session_id": "a/b", "execution_id": "e", "node": "p0"}).encode()).decode(),
        "attributes": {"type": "task_done"}, "messageId": "x2"}}
    resp = requests.post(stack.info["reducer_url"], json=event, headers={
        "X-Cloud-Trace-Context": "beef/2;o=1", "ce-id": "x2", "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/t"}, timeout=30)
    assert resp.status_code == 200, resp.text
    deadline = time.time() + 10
    while time.time() < deadline:
        worker_errors = [line for line in log_lines(stack, "worker-0")
                         if line["severity"] == "ERROR" and "acknowledged" in line["message"]]
        reducer_errors = [line for line in log_lines(stack, "reducer")
                          if "malformed event x1" in line["message"]
                          or "dropped event x2" in line["message"]]
        if len(worker_errors) >= 5 and len(reducer_errors) >= 2:
            break
        time.sleep(0.2)
    assert len(worker_errors) >= 5 and len(reducer_errors) >= 2
    assert any(line.get(logs.TRACE_KEY, "").endswith("/traces/feed") for line in worker_errors)
    assert any(line.get(logs.TRACE_KEY, "").endswith("/traces/beef") for line in reducer_errors)


def test_a_task_keeps_the_last_lines_its_own_thread_logged():
    """``captured``: the lines of this thread only (another thread's work is another
    task's), shortened, the last TASK_LOG_LINES kept."""
    import threading

    worker = logging.getLogger("francine.worker")
    with logs.captured() as captured:
        other = threading.Thread(target=lambda: worker.warning("another task's line"))
        other.start()
        other.join()
        for i in range(logs.TASK_LOG_LINES + 3):
            worker.info("line %d", i)
        worker.warning("x" * 1000 + "\nsecond line")
        logging.getLogger("elsewhere").warning("not Francine's")
    worker.info("after the task")
    lines = captured.lines
    assert len(lines) == logs.TASK_LOG_LINES
    assert lines[0].endswith("INFO line 4") and " WARNING xxx" in lines[-1]
    assert len(lines[-1]) == logs.TASK_LOG_CHARS and "second" not in lines[-1]
    assert not any("another task" in line or "after" in line for line in lines)


def test_a_capture_leaves_the_francine_loggers_level_as_it_found_it():
    francine = logging.getLogger("francine")
    before = francine.level
    try:
        for level in (logging.NOTSET, logging.ERROR):
            francine.setLevel(level)
            with logs.captured() as captured:
                logging.getLogger("francine.worker").error("kept")
            assert francine.level == level
            assert [line.split(" ", 1)[1] for line in captured.lines] == ["ERROR kept"]
    finally:
        francine.setLevel(before)
