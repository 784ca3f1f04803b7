"""The three emulators of the local stack: Firestore, Pub/Sub and Cloud Storage.

Firestore and Pub/Sub come with the Google Cloud CLI (``gcloud emulators ...``, Java);
Cloud Storage is the PyPI package ``gcp-storage-emulator`` (run with create-only uploads
honoured: ``francine.tools.local.storage_emulator``). ``Emulators.start`` returns
the environment variables that point the Google client libraries at them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
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
        fs = self._group.start("firestore", [
            gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{fs_port}",
            "--quiet"], env=java)
        ps = self._group.start("pubsub", [
            gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{ps_port}",
            f"--data-dir={pubsub_data}", "--quiet"], env=java)
        gcs = self._group.start("storage", [
            sys.executable, "-m", "francine.tools.local.storage_emulator", "start",
            "--host=127.0.0.1", f"--port={gcs_port}", "--in-memory", "--quiet"])
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

    def terminate(self) -> None:
        self._group.terminate_all()

    def stop(self) -> None:
        self._group.stop_all()
