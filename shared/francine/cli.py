"""``francine``: the local stack, users, and renders from the command line.

    francine stack up [--port P] [--workers N]     run the pipeline here until Ctrl-C
    francine users create NAME [--bucket B ...]    a new user's API key
    francine users list | revoke U | rotate U | allow-bucket U B | deny-bucket U B | set-quota U Q V
                    (the local stack; --project P: a deployed project, with Application
                    Default Credentials, straight to Firestore)
    francine render ao|SCENE.json -o out.png --parallel N [--api URL --key KEY]
                    [--producer P --resource NAME=PATH ...]   (for a bare scene file)
    francine demo                                  stack up, render aobench, stack down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import signal
import sys
import time

from francine.client import ApiError, Client, load_scene_file


def _stack_info(state_dir: str) -> dict:
    path = pathlib.Path(state_dir) / "stack.json"
    if not path.exists():
        sys.exit(f"no running stack ({path} not found): start one with 'francine stack up'")
    return json.loads(path.read_text())


def cmd_stack_up(args) -> int:
    from francine.local.stack import Stack, StackOptions, wait_forever

    stack = Stack(StackOptions(port=args.port, workers=args.workers,
                               state_dir=pathlib.Path(args.state_dir)))

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    # Also SIGINT: a shell that starts us in the background may have set it to "ignore".
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        info = stack.start()
        print(f"francine api: {info['api_url']}  (key in {stack.state_dir / 'stack.json'})",
              flush=True)
        wait_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        print("francine stack stopped", flush=True)
    return 0


def cmd_users(args) -> int:
    from francine.local.users_admin import run_users

    return run_users(args, None if args.project else _stack_info(args.state_dir))


def progress_bar(status: dict, width: int = 30) -> str:
    p = status["progress"]
    t = status["tasks"]
    bar = "#" * int(p * width) + "-" * (width - int(p * width))
    return (f"\r[{bar}] {p * 100:5.1f}%  {status['status']:<9} "
            f"tasks {t['done']}/{t['total']} running {t['running']}")


def time_breakdown(status: dict) -> str:
    t = status["time"]

    def s(v):
        return "-" if v is None else f"{v:.3f} s"

    return (f"total {s(t['total'])} | fetching {s(t['fetching'])}, producing "
            f"{s(t['producing'])}, reducing {s(t['reducing'])} (summed over tasks; cpu "
            f"{s(t['cpu'])}) | first task after {s(t['first_task_after'])}, image after "
            f"last task {s(t['image_after_last_task'])}")


def render(client: Client, target: str, output: pathlib.Path, parallel: int,
           tile: int | None, fmt: str | None,
           producer: str | None = None, resources: dict | None = None) -> dict:
    """Create a session for ``target`` (a producer name or a scene file), upload its
    resources, render, show progress, write the image; returns the final status."""
    if target.endswith(".json"):
        producer, scene, resources, file_fmt = load_scene_file(
            pathlib.Path(target), producer, resources)
    else:
        producer, scene, resources, file_fmt = target, None, resources or {}, "png"
    session = client.create_session(producer, scene, fmt or file_fmt)
    try:
        for name, path in resources.items():
            client.put_resource(session["id"], name, path.read_bytes())
        execution = client.execute(session["id"], parallel=parallel, tile=tile)

        def show(status):
            print(progress_bar(status), end="", file=sys.stderr, flush=True)

        status = client.wait(session["id"], execution["id"], on_status=show)
        print(file=sys.stderr)
        if status["status"] != "done":
            raise SystemExit(f"execution {status['status']}: {status.get('error')}")
        output.write_bytes(client.result(session["id"], execution["id"]))
    except BaseException:
        # The session was made for this render only: a failed one leaves none behind.
        with contextlib.suppress(Exception):
            client.request("DELETE", f"/v1/sessions/{session['id']}")
        raise
    return status


def cmd_render(args) -> int:
    if args.api:
        client = Client(args.api, args.key)
    else:
        info = _stack_info(args.state_dir)
        client = Client(info["api_url"], args.key or info["api_key"])
    resources = {}
    for spec in args.resource:
        name, sep, path = spec.partition("=")
        if not sep:
            sys.exit(f"--resource {spec}: expected NAME=PATH")
        resources[name] = pathlib.Path(path)
    try:
        status = render(client, args.target, pathlib.Path(args.output), args.parallel,
                        args.tile, args.format, producer=args.producer, resources=resources)
    except (ValueError, ApiError) as e:
        sys.exit(f"francine render: {e}")
    print(f"wrote {args.output}")
    print(time_breakdown(status))
    return 0


def cmd_demo(args) -> int:
    """The main job: a local stack, aobench through the pipeline, the image, the times."""
    from francine.local.stack import Stack, StackOptions

    t0 = time.perf_counter()
    with Stack(StackOptions(workers=args.workers, state_dir=pathlib.Path(args.state_dir))) as s:
        t_up = time.perf_counter() - t0
        print(f"stack up in {t_up:.1f} s: {s.info['api_url']} with {args.workers} workers",
              flush=True)
        client = Client(s.info["api_url"], s.info["api_key"])
        t1 = time.perf_counter()
        status = render(client, "ao", pathlib.Path(args.output), args.parallel, args.tile,
                        None)
        t_render = time.perf_counter() - t1
    print(f"wrote {args.output} ({status['width']}x{status['height']}, parallel "
          f"{status['parallel']}, {status['tasks']['total']} tasks)")
    print(time_breakdown(status))
    print(f"wall: stack start {t_up:.1f} s, render {t_render:.1f} s, "
          f"all {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="francine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", default=".francine",
                        help="where the local stack keeps stack.json and logs")
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="the local stack").add_subparsers(
        dest="action", required=True)
    up = stack.add_parser("up", help="start emulators, api, workers and reducer")
    up.add_argument("--port", type=int, default=None, help="api port (default: a free one)")
    up.add_argument("--workers", type=int, default=2, help="render worker processes")
    up.set_defaults(func=cmd_stack_up)

    from francine.local.users_admin import add_parsers

    add_parsers(sub, cmd_users)

    r = sub.add_parser("render", help="render a producer's default scene or a scene file")
    r.add_argument("target", help="a producer name (ao) or a scene file (.json)")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--parallel", type=int, default=8)
    r.add_argument("--tile", type=int, default=None)
    r.add_argument("--format", choices=["png", "jpeg", "exr"], default=None)
    r.add_argument("--producer", help="the producer of a bare scene file")
    r.add_argument("--resource", action="append", default=[], metavar="NAME=PATH",
                   help="attach a file as resource NAME (repeatable)")
    r.add_argument("--api", help="a deployed api's URL (default: the local stack)")
    r.add_argument("--key", help="API key (default: the local stack's user)")
    r.set_defaults(func=cmd_render)

    d = sub.add_parser("demo", help="stack up, render aobench, print times, stack down")
    d.add_argument("-o", "--output", default="aobench.png")
    d.add_argument("--parallel", type=int, default=8)
    d.add_argument("--tile", type=int, default=256)
    d.add_argument("--workers", type=int, default=2)
    d.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
