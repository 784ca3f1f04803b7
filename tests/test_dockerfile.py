"""The render container's Dockerfile, kept correct without a Docker engine.

The Dockerfile is parsed (continuations, ARG/ENV substitution, stages), and the tests
check what it references: every file it copies exists (and is not excluded by its
``.dockerignore``), the package it installs carries every file of ``shared/francine``,
it runs as a non-root user, listens on ``$PORT`` and warms the numba cache at build
time. Finally its CMD is run outside Docker, in a directory laid out like the image's
WORKDIR, and must answer HTTP requests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "functions" / "renderer" / "Dockerfile"
DOCKERIGNORE = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
VENV_BIN = Path(sys.executable).parent


# --- a small Dockerfile reader ----------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int
    flags: dict[str, str] = field(default_factory=dict)

    def words(self) -> list[str]:
        return shlex.split(self.args)


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    global_args: dict[str, str]

    def stage(self, index: int) -> list[Instruction]:
        return [i for i in self.instructions if i.stage == index]

    @property
    def final_stage(self) -> int:
        return max(i.stage for i in self.instructions)

    def final(self, keyword: str) -> list[Instruction]:
        return [i for i in self.stage(self.final_stage) if i.keyword == keyword]

    def environment(self, stage: int) -> dict[str, str]:
        """ARG defaults and ENV values of ``stage``, substituted in order."""
        values = dict(self.global_args)
        for instruction in self.stage(stage):
            if instruction.keyword == "ARG":
                name, _, default = instruction.args.partition("=")
                values.setdefault(name.strip(), substitute(unquote(default), values))
            elif instruction.keyword == "ENV":
                for pair in shlex.split(instruction.args):
                    name, _, value = pair.partition("=")
                    values[name] = substitute(value, values)
        return values


def unquote(text: str) -> str:
    words = shlex.split(text)
    return words[0] if words else ""


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: values.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions, global_args, stage = [], {}, -1
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
        if keyword == "FROM":
            stage += 1
        if keyword == "ARG" and stage < 0:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = unquote(default)
            continue
        instructions.append(Instruction(keyword, rest.strip(), stage, flags))
    return Dockerfile(instructions, global_args)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse()


def glob_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: ``**/`` any directories, ``*`` within one."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics, simplified: the last matching pattern wins,
    ``!`` re-includes, and a pattern matching a parent directory matches its files."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = glob_regex((pattern[1:] if negate else pattern).strip("/"))
        if any(re.fullmatch(regex, c) for c in candidates):
            result = not negate
    return result


def ignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copies_from_context(dockerfile: Dockerfile) -> list[tuple[list[str], str, int]]:
    """(sources, destination, stage) of every COPY/ADD that reads the build context."""
    found = []
    for instruction in dockerfile.instructions:
        if instruction.keyword in ("COPY", "ADD") and "from" not in instruction.flags:
            *sources, destination = instruction.words()
            found.append((sources, destination, instruction.stage))
    return found


# --- what the Dockerfile references -----------------------------------------------------


def test_every_copied_file_exists_in_the_context(dockerfile):
    copies = copies_from_context(dockerfile)
    assert copies, "the Dockerfile copies nothing from the context"
    patterns = ignore_patterns()
    for sources, _, _ in copies:
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such file in the build context"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            relatives = [f.relative_to(ROOT).as_posix() for f in files]
            kept = [r for r in relatives if not ignored(r, patterns)]
            assert kept, f"COPY {source}: everything in it is excluded by {DOCKERIGNORE.name}"
            if path.is_file():
                assert kept == relatives, f"COPY {source}: excluded by {DOCKERIGNORE.name}"


def test_the_dockerignore_keeps_what_the_build_needs_and_drops_the_rest():
    patterns = ignore_patterns()
    assert not ignored("pyproject.toml", patterns)
    assert not ignored("shared/francine/__init__.py", patterns)
    assert not ignored("functions/renderer/main.py", patterns)
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "shared/francine/__pycache__/x.pyc",
        "shared/francine.egg-info/PKG-INFO",
        "tests/test_dockerfile.py",
    ):
        assert ignored(dropped, patterns), dropped


def test_the_installed_package_is_copied_whole(dockerfile):
    """``pip install .`` needs pyproject.toml, the package and whatever pyproject names."""
    copied = {
        source.rstrip("/")
        for sources, _, _ in copies_from_context(dockerfile)
        for source in sources
    }
    assert "pyproject.toml" in copied
    assert "shared/francine" in copied or "shared" in copied
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    readme = project.get("readme")
    if isinstance(readme, str):
        assert readme in copied, f"pyproject's readme {readme} is not copied"
    run = " ".join(i.args for i in dockerfile.instructions if i.keyword == "RUN")
    assert "pip install ." in run or "pip install '.[" in run


def test_pip_install_carries_every_file_of_the_package(tmp_path):
    """Files that are not Python modules (scenes, meshes) reach the image only if the
    package declares them as package data; build the package as pip would and compare."""
    work = tmp_path / "src"
    shutil.copytree(
        ROOT / "shared" / "francine",
        work / "shared" / "francine",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(tmp_path / "lib"),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert build.returncode == 0, build.stderr
    source = work / "shared" / "francine"
    expected = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    installed_root = tmp_path / "lib" / "francine"
    installed = {
        p.relative_to(installed_root).as_posix() for p in installed_root.rglob("*") if p.is_file()
    }
    missing = sorted(expected - installed)
    assert not missing, (
        f"pip install . leaves out {missing}: declare them in pyproject.toml "
        "([tool.setuptools.package-data])"
    )


def test_base_images_are_slim(dockerfile):
    for instruction in dockerfile.instructions:
        if instruction.keyword == "FROM":
            image = substitute(instruction.words()[0], dockerfile.global_args)
            assert re.fullmatch(r"python:[\d.]+-slim(-\w+)?", image), image


def test_runs_as_a_non_root_user(dockerfile):
    users = dockerfile.final("USER")
    assert users, "the final stage never switches away from root"
    user = users[-1].words()[0].split(":")[0]
    assert user not in ("root", "0")
    final = dockerfile.stage(dockerfile.final_stage)
    assert final.index(users[-1]) < final.index(dockerfile.final("CMD")[0])


def test_listens_on_port(dockerfile):
    (cmd,) = dockerfile.final("CMD")
    assert not cmd.args.startswith("["), "exec form would not expand $PORT"
    words = cmd.words()
    assert words[0] == "exec", "gunicorn must be PID 1 to receive SIGTERM"
    bind = words[words.index("--bind") + 1]
    assert bind in (":$PORT", ":${PORT}", "0.0.0.0:$PORT", "0.0.0.0:${PORT}")
    assert words[words.index("--workers") + 1] == "1"
    assert words[words.index("--threads") + 1] == "1"
    # The default matches the container port the Pulumi program declares.
    sys.path.insert(0, str(ROOT / "infra"))
    from francine_infra.render_service import CONTAINER_PORT

    assert dockerfile.environment(dockerfile.final_stage)["PORT"] == str(CONTAINER_PORT)


def test_warms_the_numba_cache_at_build_time_as_the_runtime_user(dockerfile):
    env = dockerfile.environment(dockerfile.final_stage)
    assert env.get("NUMBA_CACHE_DIR"), "NUMBA_CACHE_DIR is not set in the image"
    assert env.get("NUMBA_CPU_FEATURES") == "", "host CPU features would key the cache"
    # Compiled for a CPU name both Cloud Build and Cloud Run report, or never used.
    assert env.get("NUMBA_CPU_NAME"), "the cache would be keyed to the build machine's CPU"
    final = dockerfile.stage(dockerfile.final_stage)
    warm = [i for i in final if i.keyword == "RUN" and "warm_cache.py" in i.args]
    assert warm, "no RUN of warm_cache.py in the final stage"
    user = dockerfile.final("USER")[-1]
    assert final.index(user) < final.index(warm[0]), "the cache must belong to the runtime user"
    copied = [
        s
        for sources, _, stage in copies_from_context(dockerfile)
        if stage == dockerfile.final_stage
        for s in sources
    ]
    assert "functions/renderer/warm_cache.py" in copied


# --- the entry point, served outside Docker ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_entry_point_imports_and_serves(dockerfile, tmp_path):
    """Lay out the final stage's WORKDIR as the COPY lines do and run its CMD there."""
    final_stage = dockerfile.final_stage
    (workdir,) = [i.args for i in dockerfile.final("WORKDIR")]
    app = tmp_path / "app"
    app.mkdir()
    for sources, destination, stage in copies_from_context(dockerfile):
        if stage != final_stage:
            continue
        assert destination in ("./", ".", workdir, workdir + "/"), destination
        for source in sources:
            shutil.copy(ROOT / source, app / Path(source).name)

    env = {**os.environ, **dockerfile.environment(final_stage)}
    port = free_port()
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        PORT=str(port),
        NUMBA_CACHE_DIR=str(tmp_path / "numba"),
        FRANCINE_CACHE_DIR=str(tmp_path / "cache"),
        GOOGLE_CLOUD_PROJECT="francine-dockerfile-test",
    )
    (cmd,) = dockerfile.final("CMD")
    process = subprocess.Popen(
        ["/bin/sh", "-c", cmd.args],
        cwd=app,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                status, _ = request(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                time.sleep(0.2)
        assert process.poll() is None, process.stdout.read().decode(errors="replace")
        assert status == 200, f"GET /health answered {status}"
        # A malformed push envelope is acknowledged (200) and logged: any other answer
        # would make Pub/Sub retry it until it is dead-lettered.
        status, body = request(f"http://127.0.0.1:{port}/", json.dumps({"nope": 1}).encode())
        assert status == 200 and b'"dropped"' in body, (status, body)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


# --- the blender producer's system libraries ---------------------------------------------

def installed_packages(dockerfile: Dockerfile) -> set[str]:
    """Debian packages that ``apt-get install`` lines of the final stage name."""
    names = set()
    for run in dockerfile.final("RUN"):
        for command in run.args.split("&&"):
            words = command.split()
            if words[:2] == ["apt-get", "install"]:
                names.update(w for w in words[2:] if not w.startswith("-"))
    return names


def closure(packages: set[str]) -> set[str]:
    """The packages and everything they depend on (apt-cache, this Debian)."""
    out = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends",
                          "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                          "--no-enhances", *sorted(packages)],
                         capture_output=True, text=True, check=True).stdout
    return {line.strip().split()[-1].strip("<>") for line in out.splitlines() if line.strip()}


def test_the_image_installs_what_bpy_links_against(dockerfile):
    """Every shared library that bpy's extension loads from the system (ldd, here on the
    Debian release of the python:*-slim images) comes from a package that the image
    installs, directly or as a dependency, or from the base image's C and C++ runtime."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or not shutil.which("dpkg"):
        pytest.skip("bpy (the blender extra) and dpkg are needed")
    extension = Path(spec.origin)
    ldd = subprocess.run(["ldd", str(extension)], capture_output=True, text=True,
                         check=True).stdout
    system = [parts[2] for parts in (line.split() for line in ldd.splitlines())
              if len(parts) >= 3 and parts[1] == "=>" and "/bpy/" not in parts[2]]
    assert system, ldd
    base = {"libc6", "libstdc++6", "libgcc-s1", "libuuid1"}  # in python:*-slim
    available = closure(installed_packages(dockerfile)) | base
    # dpkg knows a file under the path its package installed (/lib or /usr/lib).
    candidates = {lib: {lib, os.path.realpath(lib),
                        os.path.realpath(lib).replace("/usr/lib/", "/lib/", 1)}
                  for lib in system}
    owners = {}
    out = subprocess.run(["dpkg", "-S", *sorted(set().union(*candidates.values()))],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        package, _, path = line.partition(": ")
        owners[path.strip()] = package.split(":")[0]
    missing = {}
    for lib, paths in candidates.items():
        packages = {owners[p] for p in paths if p in owners}
        if not packages & available:
            missing[lib] = packages or "no package"
    assert not missing, f"bpy needs libraries the image does not install: {missing}"
    assert "libgl1" in installed_packages(dockerfile)
    assert all(run.args.count("--no-install-recommends") for run in dockerfile.final("RUN")
               if "apt-get install" in run.args), "keep the image lean: no recommends"
    assert any("rm -rf /var/lib/apt/lists" in run.args for run in dockerfile.final("RUN"))
