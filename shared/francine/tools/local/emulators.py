"""The three emulators of the local stack: Firestore, Pub/Sub and Cloud Storage.

Firestore and Pub/Sub come with the Google Cloud CLI (``gcloud emulators ...``, Java);
Cloud Storage is the PyPI package ``gcp-storage-emulator`` (run with create-only uploads
honoured: ``francine.tools.local.storage_emulator``). ``Emulators.start`` returns
the environment variables that point the Google client libraries at them.

They keep everything in memory unless ``persist`` names a folder: then Firestore starts
from the export in ``persist/firestore`` (``--import-data``) and ``save`` exports to it
again (the emulator's own export), and Cloud Storage keeps its objects in
``persist/storage``. Pub/Sub keeps nothing: the stack creates its topics and
subscriptions at start, and the watchdog publishes again what a stopped stack left.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field

from francine.tools.local.processes import ProcessGroup, free_port, http_ok

#: The Java emulators' JVM settings (unless JAVA_TOOL_OPTIONS is set): only the quick
#: C1 compiler, on one thread, and the serial collector. They share a small machine with
#: the renders, and a short-lived emulator spends more CPU on optimising its own code with
#: C2 and on parallel collection than it wins back: measured on 2 cores with 100 × (get,
#: conditional update, update, count) on the Firestore emulator, 2.0 s of its CPU
#: instead of 3.4–4.7 s, and a third of the latency or less (load average 17–22).
JAVA_OPTIONS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1"


@dataclass
class Emulators:
    project: str = "francine-local"
    log_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="francine-emu-"))
    #: A folder that keeps the data across restarts (None: memory only).
    persist: pathlib.Path | None = None

    def __post_init__(self):
        self._group = ProcessGroup(self.log_dir)

    def start(self) -> dict[str, str]:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise RuntimeError("gcloud is not on PATH: the Firestore and Pub/Sub emulators "
                               "come with the Google Cloud CLI")
        if shutil.which("java") is None:
            raise RuntimeError("java is not on PATH: the Firestore and Pub/Sub emulators "
                               "need Java 17 or later (e.g. apt-get install "
                               "openjdk-17-jre-headless)")
        if importlib.util.find_spec("gcp_storage_emulator") is None:
            raise RuntimeError("the Cloud Storage emulator is not installed: "
                               "pip install 'francine[local]' (gcp-storage-emulator)")
        fs_port, ps_port, gcs_port = free_port(), free_port(), free_port()
        java = {**os.environ, "JAVA_TOOL_OPTIONS": os.environ.get("JAVA_TOOL_OPTIONS",
                                                                   JAVA_OPTIONS)}
        pubsub_data = os.path.join(self.log_dir, "pubsub-data")
        os.makedirs(pubsub_data, exist_ok=True)
        keep = []
        last = self._last_export()
        if last is not None:
            keep = [f"--import-data={last}"]
        fs = self._group.start("firestore", [
            gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{fs_port}",
            *keep, "--quiet"], env=java)
        ps = self._group.start("pubsub", [
            gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{ps_port}",
            f"--data-dir={pubsub_data}", "--quiet"], env=java)
        storage = ["--in-memory"]
        if self.persist is not None:
            (self.persist / "storage").mkdir(parents=True, exist_ok=True)
            storage = []
        gcs = self._group.start("storage", [
            sys.executable, "-m", "francine.tools.local.storage_emulator",
            *(["--data-dir", str(self.persist / "storage")] if self.persist else []),
            "start", "--host=127.0.0.1", f"--port={gcs_port}", *storage, "--quiet"])
        self._firestore = f"127.0.0.1:{fs_port}"
        try:
            self._group.wait_ready(fs, lambda: http_ok(f"http://127.0.0.1:{fs_port}/"), 90)
            self._group.wait_ready(ps, lambda: http_ok(f"http://127.0.0.1:{ps_port}/"), 90)
            self._group.wait_ready(
                gcs, lambda: http_ok(f"http://127.0.0.1:{gcs_port}/storage/v1/b"), 30)
        except Exception:
            self.stop()
            raise
        return {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{fs_port}",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ps_port}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs_port}",
        }

    @property
    def _export(self) -> pathlib.Path:
        assert self.persist is not None
        return self.persist / "firestore"

    def _last_export(self) -> pathlib.Path | None:
        """The saved export's metadata file (what ``--import-data`` reads), in the
        folder the emulator named."""
        if self.persist is None:
            return None
        found = sorted(self._export.glob("*/*.overall_export_metadata"))
        return found[-1] if found else None

    def save(self) -> None:
        """Export Firestore's documents to ``persist`` (nothing without it)."""
        if self.persist is None or not getattr(self, "_firestore", None):
            return
        # The emulator exports into a new folder of its own inside the one it is given
        # (the import reads the metadata file named after that folder): the folder
        # holding it replaces the last one once the export is complete.
        staging = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=self.persist))
        try:
            body = json.dumps({"database": f"projects/{self.project}/databases/(default)",
                               "export_directory": str(staging)}).encode()
            request = urllib.request.Request(
                f"http://{self._firestore}/emulator/v1/projects/{self.project}:export",
                data=body, headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=120) as resp:
                resp.read()
            old = self._export.with_name(".firestore-old")
            shutil.rmtree(old, ignore_errors=True)
            if self._export.exists():
                self._export.rename(old)
            staging.rename(self._export)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def terminate(self) -> None:
        self._group.terminate_all()

    def stop(self) -> None:
        self._group.stop_all()
