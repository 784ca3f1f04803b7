"""OBJ parsing speed: the bunny (bulk path) and an error on the last line of a large
file (bulk path fails, line-by-line path names the line).

    .venv/bin/python bench/obj_parse.py [--runs 5]

Prints the median seconds of each case over ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

from francine.producers.pathtracer import shapes
from francine.producers.pathtracer.obj import ObjError, parse_obj

BUNNY = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "bunny.obj"


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs

    v, f = shapes.icosphere(5)
    broken = shapes.to_obj(v, f) + b"f 1 2 0\n"

    def error_at_end():
        try:
            parse_obj(broken)
        except ObjError:
            return
        raise AssertionError("the broken file parsed")

    print(f"error on the last line of {len(f)} triangles: "
          f"{median_seconds(error_at_end, runs):.3f} s")
    if BUNNY.exists():
        data = BUNNY.read_bytes()
        seconds = median_seconds(lambda: parse_obj(data), runs)
        print(f"bunny ({len(data) >> 10} KiB): {seconds:.3f} s")


if __name__ == "__main__":
    main()
