"""francine: the local stack, users, sessions, executions and renders.

    francine stack up [--port P] [--workers N] [--farm-slots K] [--refuse-when-busy]
                                                   run the pipeline here until Ctrl-C
    francine stack status | down                   the running stack: address, logs; stop it
    francine users create NAME [--bucket B ...]    a new user's API key
    francine users list | revoke U | rotate U | allow-bucket U B | deny-bucket U B | set-quota U Q V
                    (the local stack; --project P: a deployed project, with Application
                    Default Credentials, straight to Firestore)
    francine render ao|SCENE.json -o out.png [--parallel N] [--session SID]
                    [--noise X [--max-passes M]] [--max-cost USD] [--max-cpu-seconds S]
                    [--seed N]                     (also for .blend files)
    francine sessions ls | show SID | rm SID
    francine executions ls SID | status|watch|cancel EID | result EID -o FILE
    francine executions extend EID --passes N | --noise X [--max-passes M]
                    [--max-cost USD] [--max-cpu-seconds S] [-o FILE]
                                                   more passes on a done render
    francine render SCENE.blend -o out.exr --parallel N --samples S [--frames 1-24]
                    [--denoise] [--scene S] [--camera C] [--size WxH]
                    [--resolution-percentage P]    (uploads what the file reads)
    francine demo                                  stack up, render aobench, stack down

An execution is named by its id (the CLI finds its session) or by SID/EID. Commands
talk to the local stack, from any folder, unless --api and --key name another: its
state (stack.json with the api's address and a user's key, the logs) is in
$FRANCINE_STATE_DIR, else $XDG_STATE_HOME/francine (~/.local/state/francine); --state-dir
names another, before or after the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import signal
import sys
import time

import requests

from francine.base.config import ENV
from francine.domain.records import FINAL
from francine.tools.client import ApiError, Client, load_scene_file, wave_fields
from francine.tools.terminal import (
    EXTENSIONS,
    CliError,
    Interrupted,
    WaveProgress,
    check_writable,
    explain,
    output_format,
)


def default_state_dir(environ=os.environ) -> pathlib.Path:
    """Where the local stack keeps its state when ``--state-dir`` does not say: one
    folder per user, whatever folder the command runs in."""
    if environ.get("FRANCINE_STATE_DIR"):
        return pathlib.Path(environ["FRANCINE_STATE_DIR"])
    base = environ.get("XDG_STATE_HOME") or str(pathlib.Path.home() / ".local" / "state")
    return pathlib.Path(base) / "francine"


def _stack_info(state_dir: str) -> dict:
    path = pathlib.Path(state_dir) / "stack.json"
    if not path.exists():
        raise CliError(f"no running stack ({path} not found): start one with "
                       "'francine stack up', or name its --state-dir")
    return json.loads(path.read_text())


def running_stack(state_dir: pathlib.Path) -> dict | None:
    """The stack whose state is in ``state_dir`` if its process still runs (a
    stack.json left by a killed stack is stale, not running)."""
    path = state_dir / "stack.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    return info if pid and running(pid) else None


def _client(args) -> Client:
    if getattr(args, "api", None):
        if not args.key:
            raise CliError("--api needs --key (the API key of a user of that api)")
        return Client(args.api, args.key)
    info = _stack_info(args.state_dir)
    return Client(info["api_url"], getattr(args, "key", None) or info["api_key"])


# --- the stack ---------------------------------------------------------------------------

def farm_slots_of(option: int | None, workers: int, environ=os.environ) -> int | None:
    """``stack up``'s farm admission: ``--farm-slots``, else FRANCINE_FARM_SLOTS (None:
    the stack reads it), else twice the workers (fair share on, as in the cloud; one
    task queued at each worker)."""
    if option is not None or environ.get(ENV["farm_slots"]):
        return option
    return 2 * workers


def cmd_stack_up(args) -> int:
    from francine.tools.local.stack import Stack, StackOptions, wait_forever

    other = running_stack(pathlib.Path(args.state_dir))
    if other is not None:
        raise CliError(f"a stack already runs here (process {other['pid']}, api "
                       f"{other['api_url']}, state in {args.state_dir}): stop it with "
                       "'francine stack down', or start another with --state-dir")
    stack = Stack(StackOptions(port=args.port, workers=args.workers,
                               state_dir=pathlib.Path(args.state_dir),
                               farm_slots=farm_slots_of(args.farm_slots, args.workers),
                               refuse_when_busy=args.refuse_when_busy,
                               watchdog_interval_s=args.watchdog_interval,
                               stall_s=args.stall_seconds,
                               persist=pathlib.Path(args.persist) if args.persist else None))

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    # Also SIGINT: a shell that starts us in the background may have set it to "ignore".
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        try:
            info = stack.start()
        except RuntimeError as e:
            raise CliError(str(e)) from None
        print(f"francine api    {info['api_url']}\n"
              f"viewer          {info['api_url']}/viewer\n"
              f"API key         {info['api_key']}  (user 'local'; also in "
              f"{stack.state_dir / 'stack.json'})\n"
              f"logs            {info['logs']}\n"
              + (f"data            kept in {args.persist} (--persist)" if args.persist else
                 "data            in memory: sessions are gone when the stack stops "
                 "(--persist DIR keeps them)"), flush=True)
        wait_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        print("francine stack stopped", flush=True)
    return 0


def cmd_stack_status(args) -> int:
    info = _stack_info(args.state_dir)
    try:
        ok = requests.get(info["api_url"] + "/health", timeout=3).ok
    except requests.RequestException:
        ok = False
    print(f"api      {info['api_url']}  ({'answering' if ok else 'NOT answering'})")
    print(f"viewer   {info['api_url']}/viewer")
    print(f"workers  {len(info.get('workers', []))}")
    if info.get("pid"):
        print(f"pid      {info['pid']}  (francine stack down stops it)")
    logs = pathlib.Path(info.get("logs", pathlib.Path(args.state_dir) / "logs"))
    print(f"logs     {logs}")
    for f in sorted(logs.glob("*.log")):
        print(f"  {f.name:<16} {f.stat().st_size:>10} bytes")
    return 0 if ok else 1


def cmd_stack_down(args) -> int:
    path = pathlib.Path(args.state_dir) / "stack.json"
    info = _stack_info(args.state_dir)
    pid = info.get("pid")
    if not pid:
        raise CliError("this stack.json names no process: stop 'francine stack up' with Ctrl-C")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        raise CliError(f"the stack's process {pid} is gone; removed its stale {path}") from None
    deadline = time.monotonic() + args.timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if path.exists() or running(pid):
        raise CliError(f"the stack (process {pid}) did not stop within {args.timeout:.0f} s")
    print("francine stack stopped")
    return 0


def running(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def cmd_users(args) -> int:
    from francine.tools.local.users_admin import run_users

    return run_users(args, None if args.project else _stack_info(args.state_dir))


# --- showing an execution ----------------------------------------------------------------

def time_breakdown(status: dict) -> str:
    t = status["time"]

    def s(v):
        return "-" if v is None else f"{v:.3f} s"

    return (f"total {s(t['total'])} | fetching {s(t['fetching'])}, producing "
            f"{s(t['producing'])}, reducing {s(t['reducing'])} (summed over tasks; cpu "
            f"{s(t.get('cpu'))}) | first task after {s(t.get('first_task_after'))}, image "
            f"after last task {s(t.get('image_after_last_task'))}")


def waves_summary(status: dict) -> str | None:
    """A render's passes, noise, why its waves stopped and what it spent, in one line
    (None for a status without passes: an api before them)."""
    if status.get("passes") is None:
        return None
    waves = status.get("waves") or 0
    words = [f"passes {status['passes']}"
             + (f" ({waves} more wave{'s' if waves > 1 else ''})" if waves else "")]
    if status.get("noise") is not None:
        target = (status.get("until") or {}).get("noise")
        words.append(f"noise {status['noise']:.4g}"
                     + (f" (target {target:g})" if target is not None else ""))
    if status.get("stopped"):
        words.append(f"stopped: {status['stopped']}")
    spent = status.get("spent") or {}
    amounts = [text.format(spent[key]) for key, text in (("cpu_seconds", "{:.3f} CPU-s"),
                                                          ("usd", "${:.6f}"))
               if spent.get(key) is not None]
    if amounts:
        words.append("spent " + ", ".join(amounts))
    return " | ".join(words)


def summary(status: dict) -> str:
    """What a render ends with: its times, then its passes, noise and spending."""
    passes = waves_summary(status)
    return time_breakdown(status) + (f"\n{passes}" if passes else "")


def follow(client: Client, sid: str, eid: str, on_status) -> dict:
    """Follow an execution to its end through the event stream (status polling if the
    stream breaks); returns the final status."""
    status = None
    try:
        for status in client.events(sid, eid):
            on_status(status)
            if status["status"] in FINAL:
                return status
    except requests.RequestException:
        pass
    return client.wait(sid, eid, on_status=on_status)


def render(client: Client, target: str | None, output: pathlib.Path, parallel: int,
           tile: int | None, fmt: str | None, producer: str | None = None,
           resources: dict | None = None, session_id: str | None = None,
           fields: dict | None = None) -> dict:
    """Render ``target`` (a producer name or a scene file) in a new session, or in
    ``session_id``: upload resources, render with progress, write the image in the
    format ``output`` names; on Ctrl-C cancel the execution. ``fields``: more fields of
    the request (``wave_fields``: a noise target, caps, a seed). Returns the final
    status."""
    fmt = output_format(output, fmt)
    check_writable(output)
    if session_id:
        session = client.get_session(session_id)
        if session["format"] != fmt:
            raise CliError(f"session {session_id} renders {session['format']}, but -o "
                           f"{output} names {fmt}")
        resources = resources or {}
    elif target is None:
        raise CliError("render: name a producer or a scene file, or --session SID")
    elif target.endswith(".json"):
        producer, scene, resources, _ = load_scene_file(pathlib.Path(target), producer,
                                                        resources)
        session = client.create_session(producer, scene, fmt)
    else:
        session = client.create_session(target, None, fmt)
        resources = resources or {}
    sid = session["id"]
    try:
        status = _render_in(client, sid, resources, parallel, tile, output, fields or {})
    except Interrupted:
        raise  # the user stopped it: the session stays, to look at or render again
    except BaseException:
        if not session_id:
            # The session was made for this render only: a failed one leaves none behind.
            with contextlib.suppress(Exception):
                client.request("DELETE", f"/v1/sessions/{sid}")
        raise
    return status


def _render_in(client: Client, sid: str, resources: dict, parallel: int, tile: int | None,
               output: pathlib.Path, fields: dict) -> dict:
    for name, path in resources.items():
        client.put_resource(sid, name, pathlib.Path(path).read_bytes())
    execution = client.execute(sid, parallel=parallel, tile=tile, **fields)
    eid = execution["id"]
    print(f"session {sid}  execution {eid}", flush=True)
    return follow_render(client, sid, eid, output)


def follow_render(client: Client, sid: str, eid: str, output: pathlib.Path | None,
                  extension: bool = False) -> dict:
    """Follow a render this command started (or extended) under the progress line, and
    write its image to ``output`` (if given) once done. Ctrl-C cancels a render; an
    extension goes on (cancelled, the render would end cancelled, its finished image
    with it). Returns the final status."""
    try:
        status = follow(client, sid, eid, WaveProgress())
    except KeyboardInterrupt:
        print(file=sys.stderr)
        if extension:
            raise Interrupted(f"interrupted; the extension goes on: 'francine executions "
                              f"watch {sid}/{eid}' follows it, 'francine executions cancel "
                              f"{sid}/{eid}' stops it (and ends the render cancelled)",
                              exit_status=130) from None
        try:
            client.cancel(sid, eid)
        except (ApiError, requests.RequestException):
            raise Interrupted(f"interrupted; the render goes on: stop it with 'francine "
                              f"executions cancel {sid}/{eid}'") from None
        raise Interrupted(f"interrupted: execution {eid} cancelled") from None
    print(file=sys.stderr)
    if status["status"] != "done":
        error = status.get("error") or {}
        raise CliError(f"execution {eid} {status['status']}"
                       + (f": {error.get('message')}" if error else ""))
    if output is not None:
        output.write_bytes(client.result(sid, eid))
    return status


#: Options of ``render`` that only a .blend target reads, and those it does not.
BLEND_ONLY = ("samples", "frames", "denoise", "scene", "camera", "size",
              "resolution_percentage", "video", "estimate")
NOT_FOR_BLEND = ("session", "producer", "resource")


def check_options(args) -> None:
    """An option the target does not read is a mistake, not something to ignore."""
    blend = bool(args.target and args.target.endswith(".blend"))
    ignored = NOT_FOR_BLEND if blend else BLEND_ONLY
    given = [name for name in ignored if getattr(args, name) not in (None, False, [])]
    if given:
        option = "--" + given[0].replace("_", "-")
        raise CliError(f"{option} does not apply to a .blend file" if blend else
                       f"{option} is for .blend files only")


def request_fields(args, seed: bool = True) -> dict:
    """The request fields of --noise, --max-passes, --max-cost, --max-cpu-seconds (and
    --seed) that were given."""
    if args.max_passes is not None and args.noise is None:
        raise CliError("--max-passes needs --noise (a noise target; without one, "
                       "--parallel or --passes says how many passes)")
    return wave_fields(args.noise, args.max_passes, args.max_cost, args.max_cpu_seconds,
                       args.seed if seed else None)


def cmd_render(args) -> int:
    check_options(args)
    fields = request_fields(args)
    client = _client(args)
    resources = {}
    for spec in args.resource:
        name, sep, path = spec.partition("=")
        if not sep:
            raise CliError(f"--resource {spec}: expected NAME=PATH")
        if not pathlib.Path(path).is_file():
            raise CliError(f"--resource {spec}: no such file {path}")
        resources[name] = pathlib.Path(path)
    if args.target and args.target.endswith(".blend"):
        from francine.tools.blender_cli import render_blend

        written = render_blend(client, pathlib.Path(args.target), pathlib.Path(args.output),
                               args.parallel, args.tile, args.format, args.samples,
                               args.frames, args.denoise, args.scene, args.camera,
                               args.size, args.resolution_percentage,
                               video=pathlib.Path(args.video) if args.video else None,
                               estimate=args.estimate, fields=fields)
        if args.estimate:
            return 0
        print(f"wrote {', '.join(str(path) for path, _ in written)}")
        if len(written) == 1:
            print(summary(written[0][1]))
        return 0
    if args.target and args.target.endswith(".json") and not pathlib.Path(args.target).is_file():
        raise CliError(f"no such scene file: {args.target}")
    status = render(client, args.target, pathlib.Path(args.output), args.parallel,
                    args.tile, args.format, producer=args.producer, resources=resources,
                    session_id=args.session, fields=fields)
    print(f"wrote {args.output}")
    print(summary(status))
    return 0


# --- sessions and executions -------------------------------------------------------------

def scene_summary(session: dict) -> str:
    """What a session renders, in a few characters: its image size, or the file it
    renders when the size comes from the file (a .blend's own resolution)."""
    scene = session.get("scene") or {}
    if "width" in scene and "height" in scene:
        return f"{scene['width']}x{scene['height']}"
    if scene.get("blend"):
        return scene["blend"]
    return "default"


def table(rows: list[list[str]], header: list[str]) -> None:
    """Columns as wide as their widest cell, under a header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_sessions_ls(args) -> int:
    sessions = _client(args).sessions()
    if not sessions:
        print("no sessions", file=sys.stderr)
        return 0
    table([[s["id"], s["producer"], s["format"], scene_summary(s),
            str(len(s.get("resources", []))), s["created"]] for s in sessions],
          ["SESSION", "PRODUCER", "FORMAT", "IMAGE", "RESOURCES", "CREATED"])
    return 0


def cmd_sessions_show(args) -> int:
    print(json.dumps(_client(args).get_session(args.sid), indent=2))
    return 0


def cmd_sessions_rm(args) -> int:
    _client(args).delete_session(args.sid)
    print(f"deleted session {args.sid}")
    return 0


def locate(client: Client, ref: str) -> tuple[str, str]:
    """(session id, execution id) of ``SID/EID`` or of a bare execution id."""
    sid, sep, eid = ref.partition("/")
    if sep:
        return sid, eid
    for s in client.sessions():
        if any(e["id"] == ref for e in client.executions(s["id"])):
            return s["id"], ref
    raise CliError(f"no execution {ref} among your sessions")


def cmd_executions_ls(args) -> int:
    executions = _client(args).executions(args.sid)
    if not executions:
        print("no executions", file=sys.stderr)
        return 0
    rows = []
    for e in executions:
        frames = e.get("frames")
        rows.append([e["id"], e["status"], f"{e['progress'] * 100:.1f}%",
                     f"{e['width']}x{e['height']}", str(e.get("passes") or e["parallel"]),
                     f"{frames['done']}/{frames['total']}" if frames else "1",
                     f"{e['time']['total']:.1f} s", e["time"]["created"]])
    table(rows, ["EXECUTION", "STATUS", "PROGRESS", "IMAGE", "PASSES", "FRAMES", "TIME",
                 "CREATED"])
    return 0


def cmd_executions_status(args) -> int:
    client = _client(args)
    status = client.execution(*locate(client, args.execution))
    print(json.dumps(status, indent=2))
    return 0


def cmd_executions_watch(args) -> int:
    client = _client(args)
    sid, eid = locate(client, args.execution)
    try:
        status = follow(client, sid, eid, WaveProgress())
    except KeyboardInterrupt:
        print(f"\nstopped watching; execution {eid} goes on", file=sys.stderr)
        return 130
    print(file=sys.stderr)
    print(summary(status))
    return 0 if status["status"] == "done" else 1


def cmd_executions_cancel(args) -> int:
    client = _client(args)
    status = client.cancel(*locate(client, args.execution))
    print(f"execution {status['id']} {status['status']}")
    return 0


def check_output_of(output: pathlib.Path, eid: str, status: dict) -> None:
    """``-o`` for an execution's image: writable, and in the execution's format."""
    check_writable(output)
    wanted = EXTENSIONS.get(output.suffix.lower())
    if wanted and wanted != status["format"]:
        raise CliError(f"execution {eid} is {status['format']}, but -o {output} names {wanted}")


def cmd_executions_extend(args) -> int:
    fields = request_fields(args, seed=False)
    client = _client(args)
    output = pathlib.Path(args.output) if args.output else None
    sid, eid = locate(client, args.execution)
    if output is not None:
        check_output_of(output, eid, client.execution(sid, eid))
    client.extend(sid, eid, passes=args.passes, **fields)
    what = (f"+{args.passes} passes" if args.passes is not None
            else f"waves until noise {args.noise:g}")
    print(f"session {sid}  execution {eid}  extended: {what}", flush=True)
    status = follow_render(client, sid, eid, output, extension=True)
    if output is not None:
        print(f"wrote {output}")
    print(summary(status))
    return 0


def cmd_executions_result(args) -> int:
    client = _client(args)
    output = pathlib.Path(args.output)
    check_writable(output)
    sid, eid = locate(client, args.execution)
    status = client.execution(sid, eid)
    check_output_of(output, eid, status)
    frames = status.get("frames")
    if frames is not None and args.frame is None and frames["total"] > 1:
        raise CliError(f"execution {eid} renders {frames['total']} frames: name one with "
                       "--frame N")
    if frames is None and args.frame is not None:
        raise CliError(f"execution {eid} renders one image: --frame does not apply")
    output.write_bytes(client.result(sid, eid, args.frame))
    print(f"wrote {output}")
    return 0


def cmd_demo(args) -> int:
    """The main job: a local stack, aobench through the pipeline, the image, the times."""
    from francine.tools.local.stack import Stack, StackOptions

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


# --- the parser --------------------------------------------------------------------------

class Help(argparse.RawDescriptionHelpFormatter):
    """The module's usage text as written; each option's help says its default itself."""


def integer(low: int, high: int | None = None, bounds: str | None = None):
    """An argparse type: an integer from ``low`` (to ``high``), refused in words
    (``bounds``: how to say the range) otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {bounds or f'at least {low}'}: {value}")
        return value
    return parse


positive = integer(1)
seed_number = integer(0, (1 << 63) - 1, "0 to 2^63-1")


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0: {text}")
    return value


def add_wave_options(parser, noise_group=None, first: str | None = None) -> None:
    """--noise, --max-passes, --max-cost, --max-cpu-seconds (of ``render`` and
    ``executions extend``); --noise in ``noise_group`` when given."""
    wave = (f"; the first wave has {first} passes" if first else "")
    (noise_group or parser).add_argument(
        "--noise", type=positive_number, default=None, metavar="X",
        help="render passes in waves until the estimated relative standard error of the "
             "mean is at most X (e.g. 0.02) over 99%% of the pixels, tile by tile" + wave)
    parser.add_argument("--max-passes", type=positive, default=None, metavar="M",
                        help="with --noise: the most passes any tile renders (default: 256)")
    parser.add_argument("--max-cost", type=positive_number, default=None, metavar="USD",
                        help="spending cap in US dollars: refused when the estimate alone "
                             "exceeds it; a render that reaches it stops with the passes it "
                             "finished (default: no cap)")
    parser.add_argument("--max-cpu-seconds", type=positive_number, default=None, metavar="S",
                        help="the same cap in CPU-seconds (default: no cap)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="francine", description=__doc__, formatter_class=Help)
    parser.add_argument("--version", action="version", version=f"francine {version()}")
    state_help = ("the local stack's state folder: stack.json and logs (default: "
                  f"{default_state_dir()})")
    parser.add_argument("--state-dir", default=None, help=state_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Global options are taken after the command too ("francine stack up --state-dir D").
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=state_help)

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--api", default=None,
                     help="a deployed api's URL (default: the local stack's)")
    api.add_argument("--key", default=None, help="API key (default: the local stack's user)")

    def command(parent, name, helptext, func, parents=()):
        p = parent.add_parser(name, help=helptext, description=helptext,
                              parents=[common, *parents], formatter_class=Help)
        p.set_defaults(func=func)
        return p

    from francine.tools.local.users_admin import add_parsers

    add_parsers(sub, cmd_users, [common])

    def group(name, helptext):
        return sub.add_parser(name, help=helptext, description=helptext,
                              formatter_class=Help).add_subparsers(
            dest="action", required=True, metavar="ACTION")

    stack = group("stack", "the local stack")
    up = command(stack, "up", "start emulators, api, workers and reducer; Ctrl-C stops them",
                 cmd_stack_up)
    up.add_argument("--port", type=int, default=None, help="api port (default: a free one)")
    up.add_argument("--workers", type=positive, default=2,
                    help="render worker processes (default: 2)")
    up.add_argument("--farm-slots", type=int, default=None,
                    help="farm-wide admission with fair share across users: production "
                         "tasks in flight across executions (0: off; default: "
                         "FRANCINE_FARM_SLOTS if set, else twice the workers)")
    up.add_argument("--refuse-when-busy", action="store_true",
                    help="workers answer 429 while rendering, as Cloud Run at max instances")
    up.add_argument("--watchdog-interval", type=float, default=None, metavar="S",
                    help="seconds between the watchdog's sweeps (default: "
                         "FRANCINE_WATCHDOG_INTERVAL_S if set, else 30)")
    up.add_argument("--stall-seconds", type=float, default=None, metavar="S",
                    help="an execution standing still this long is re-driven (default: "
                         "FRANCINE_STALL_S if set, else 60)")
    up.add_argument("--persist", default=None, metavar="DIR",
                    help="keep sessions, resources and images in DIR across restarts "
                         "(default: in memory, gone when the stack stops)")
    command(stack, "status", "the running stack's address, process and logs", cmd_stack_status)
    down = command(stack, "down", "stop the running stack", cmd_stack_down)
    down.add_argument("--timeout", type=float, default=60.0,
                      help="seconds to wait for it (default: 60)")


    r = command(sub, "render", "render a producer's default scene, a scene file, or a session",
                cmd_render, [api])
    r.add_argument("target", nargs="?", default=None,
                   help="a producer name (ao, pathtracer), a scene file (.json) or a "
                        ".blend file (its relative paths are uploaded); "
                        "not needed with --session")
    r.add_argument("-o", "--output", required=True,
                   help="the image to write; its extension is the format (.png, .jpg, .exr)")
    r.add_argument("--parallel", type=positive, default=8, help="sample passes (default: 8)")
    r.add_argument("--tile", type=positive, default=None,
                   help="tile edge in pixels (default: the planner's choice)")
    r.add_argument("--format", choices=["png", "jpeg", "exr"], default=None,
                   help="must agree with -o's extension (default: -o's)")
    r.add_argument("--session", default=None, metavar="SID",
                   help="render in this existing session (default: a new session)")
    r.add_argument("--producer", default=None, help="the producer of a bare scene file")
    r.add_argument("--resource", action="append", default=[], metavar="NAME=PATH",
                   help="attach a file as resource NAME (repeatable)")
    w = r.add_argument_group("noise target, spending caps, seed (any target)")
    add_wave_options(w, first="--parallel")
    w.add_argument("--seed", type=seed_number, default=None, metavar="N",
                   help="where the passes' seeds come from, 0 to 2^63-1: the same seed, "
                        "scene and passes give the same image byte for byte (default: "
                        "from the execution's id)")
    b = r.add_argument_group("Blender files (TARGET.blend)")
    b.add_argument("--samples", type=positive, default=None,
                   help="Cycles samples per pass (default: 16)")
    b.add_argument("--frames", default=None,
                   help="frames of the scene's range, one execution, one image each, "
                        "written as each is done (-o out.exr → out_0001.exr …): 5, 1-24, "
                        "1..24 or a list, 1-3,10")
    b.add_argument("--estimate", action="store_true",
                   help="print the render's estimate (tasks, CPU, wall time, cost in USD; a "
                        "scout measures the scene the first time) and render nothing")
    b.add_argument("--video", default=None, metavar="OUT.mp4",
                   help="with --frames: write the preview video (H.264 MP4 at the scene's "
                        "frame rate) at the end")
    b.add_argument("--denoise", action="store_true", help="denoise the final image (OIDN)")
    b.add_argument("--scene", default=None, help="the Blender scene (default: the active one)")
    b.add_argument("--camera", default=None, help="the camera object (default: the scene's)")
    b.add_argument("--size", default=None, metavar="WxH",
                   help="image size in pixels, e.g. 1920x1080, each side 1 to 16384 "
                        "(default: the scene's resolution)")
    b.add_argument("--resolution-percentage", type=int, default=None, metavar="P",
                   help="scale --size, or the scene's resolution in place of its own "
                        "percentage, by P %% (1 to 1000; the result at most 16384 a side)")

    sessions = group("sessions", "your sessions")
    command(sessions, "ls", "list your sessions", cmd_sessions_ls, [api])
    show = command(sessions, "show", "one session as JSON", cmd_sessions_show, [api])
    show.add_argument("sid", help="session id")
    rm = command(sessions, "rm", "delete a session with its executions and images",
                 cmd_sessions_rm, [api])
    rm.add_argument("sid", help="session id")

    ex = group("executions", "renders of a session")
    ls = command(ex, "ls", "list a session's executions", cmd_executions_ls, [api])
    ls.add_argument("sid", help="session id")
    for name, helptext, func in (
            ("status", "an execution's status as JSON", cmd_executions_status),
            ("watch", "follow an execution to its end", cmd_executions_watch),
            ("cancel", "cancel an execution", cmd_executions_cancel)):
        p = command(ex, name, helptext, func, [api])
        p.add_argument("execution", help="EID or SID/EID")
    more = command(ex, "extend", "more passes on a done render (not an animation): "
                   "followed like a render, its image written with -o",
                   cmd_executions_extend, [api])
    more.add_argument("execution", help="EID or SID/EID")
    how = more.add_mutually_exclusive_group(required=True)
    how.add_argument("--passes", type=positive, default=None, metavar="N",
                     help="passes to add after the last one")
    add_wave_options(more, how)
    more.add_argument("-o", "--output", default=None,
                      help="write the image here once done (default: write nothing; "
                           "'francine executions result' gets it later)")
    res = command(ex, "result", "write an execution's image", cmd_executions_result, [api])
    res.add_argument("execution", help="EID or SID/EID")
    res.add_argument("-o", "--output", required=True, help="the file to write")
    res.add_argument("--frame", type=int, default=None, metavar="N",
                     help="an animation's frame N")

    d = command(sub, "demo", "stack up, render aobench, print times, stack down", cmd_demo)
    d.add_argument("-o", "--output", default="aobench.png",
                   help="the image to write (default: aobench.png)")
    d.add_argument("--parallel", type=positive, default=8, help="sample passes (default: 8)")
    d.add_argument("--tile", type=positive, default=256,
                   help="tile edge in pixels (default: 256)")
    d.add_argument("--workers", type=positive, default=2,
                   help="render worker processes (default: 2)")
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("francine")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.state_dir = str(args.state_dir or default_state_dir())
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (CliError, ApiError, requests.RequestException, OSError, ValueError) as e:
        print(f"francine {args.command}: {explain(e, args)}", file=sys.stderr)
        return getattr(e, "exit_status", 1)


if __name__ == "__main__":
    sys.exit(main())
