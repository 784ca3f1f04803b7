"""The SSE stream's pacing, over the twins: a stream that waits says so with keep-alive
comments, and ends with a ``timeout`` event after its lifetime; an animation's stream
says when each frame ends."""

from __future__ import annotations

import dataclasses
import json

import animated

from francine.base.config import Settings
from francine.domain.records import Session
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker
from francine.services import events, executions
from francine.twins import pump, twin_adapters


def adapters(producer="ao"):
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=0.0))
    ad.store.create_session(Session("s", "u", producer, "png",
                                    {"width": 16, "height": 16, "nao_samples": 1}))
    return ad


def parsed(lines) -> list[tuple[str, dict | None]]:
    out = []
    for chunk in lines:
        if chunk.startswith(":"):
            out.append(("comment", None))
        elif chunk.startswith("event: "):
            name, data = chunk.split("\n")[:2]
            out.append((name[7:], json.loads(data[6:])))
    return out


def test_a_waiting_stream_keeps_alive_and_ends_with_a_timeout():
    ad = adapters()
    ex, _ = executions.start(ad, "u", "s", {"parallel": 2})  # nobody renders it
    got = parsed(events.stream(ad, "s", ex.id, max_s=0.5, poll_s=0.05, heartbeat_s=0.1))
    names = [n for n, _ in got]
    assert names[0] == "status" and names[-1] == "timeout"
    assert names.count("comment") >= 2
    assert got[-1][1] == {"id": ex.id, "reconnect": True}


def test_an_animations_stream_says_when_each_frame_ends():
    animated.register()
    ad = adapters("flipbook")
    ex, _ = executions.start(ad, "u", "s", {"parallel": 1, "frames": "1-3"})
    pump(ad, Worker(ad), Reducer(ad))
    got = parsed(events.stream(ad, "s", ex.id, max_s=5, poll_s=0.01))
    frames = [d["frame"] for n, d in got if n == "frame"]
    assert frames == [1, 2, 3]
    assert got[-1][0] == "status" and got[-1][1]["status"] == "done"
    assert got[-1][1]["frames"]["done"] == 3
