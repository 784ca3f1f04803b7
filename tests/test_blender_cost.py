"""The blender cost model: a guess from the file until the session has measurements."""

from __future__ import annotations

import datetime as dt

import pytest

from francine.domain.records import Execution, Status
from francine.producers.blender import cost


def done(cpu: float, width=100, height=50, passes=4, samples=8, status="done") -> Execution:
    return Execution(
        id="e", session_id="s", user="u", created=dt.datetime.now(dt.UTC),
        producer="blender", format="png", display="srgb", channels=3,
        scene={"samples": samples}, shape={"width": width, "height": height, "passes": passes},
        parallel=passes, status=Status(status), summary={"time": {"cpu": cpu}})


def test_the_file_estimate_grows_with_samples_and_geometry():
    small = {"polygons": 10, "objects": 3}
    big = {"polygons": 1_000_000, "objects": 3000}
    assert cost.pixel_seconds({"samples": 32}, small) == pytest.approx(
        2 * cost.pixel_seconds({"samples": 16}, small))
    assert cost.sample_seconds(big) > 3 * cost.sample_seconds(small)
    assert cost.corrected({"samples": 16}, small, []) == cost.pixel_seconds({"samples": 16},
                                                                              small)


def test_measured_executions_replace_the_guess():
    # 16 CPU-seconds for 100×50 pixels × 4 passes × 8 samples = 1e-4 s per pixel-sample.
    history = [done(16.0), done(999.0, status="failed")]
    assert cost.measured_sample_seconds(history) == pytest.approx(1e-4)
    assert cost.corrected({"samples": 2}, {"polygons": 10}, history) == pytest.approx(
        2 * 1e-4 * cost.MARGIN)
    # Several executions weigh by their work.
    both = [done(16.0), done(48.0, samples=8, passes=4)]
    assert cost.measured_sample_seconds(both) == pytest.approx(64.0 / 320_000)
