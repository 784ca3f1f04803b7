"""Settings of a Francine deployment, read from the environment.

The same variables configure the cloud (set by the Pulumi program) and the local stack
(set by ``francine stack up``); the Google clients find the emulators through their own
``*_EMULATOR_HOST`` variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    project: str = "francine-local"
    database: str = "(default)"
    resources_bucket: str = "francine-resources"
    partials_bucket: str = "francine-partials"
    results_bucket: str = "francine-results"
    produce_topic: str = "francine-produce"
    events_topic: str = "francine-events"
    #: Production topics: 1 in the cloud; the local stack uses one per worker.
    produce_shards: int = 1
    #: Upper bounds of request bodies (API.md: 1 MiB JSON, 512 MiB uploads; the cloud
    #: deployment lowers uploads to Cloud Run's 32 MiB request limit) and of any resource
    #: (a file attached by URL is not a request body).
    max_json_bytes: int = 1 << 20
    max_upload_bytes: int = 512 << 20
    max_resource_bytes: int = 512 << 20
    #: The planner refuses executions with more tasks than this (Firestore writes,
    #: Pub/Sub messages and partial images all grow with it).
    max_tasks: int = 10_000
    #: Resources per session: every execution records their hashes in its document,
    #: which Firestore caps at 1 MiB.
    max_resources: int = 1_000
    #: The longest a production task may be estimated to take (the deployment's ack
    #: deadline and timeouts are sized for it): larger tiles are refused, and when the
    #: client gives no tile the planner picks one estimated at a quarter of it.
    max_task_seconds: float = 120.0
    #: Production tasks published at once per execution; the rest are published as
    #: earlier ones finish (0: all at once). Admission control for shared farms.
    admission_limit: int = 0
    #: How long ``?block=1`` waits before answering with the execution's status.
    block_timeout_s: float = 300.0
    #: Directory where a worker keeps fetched resources between tasks.
    cache_dir: str = "/tmp/francine-cache"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()

        def get(name: str, default):
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            return type(default)(raw)

        return cls(
            project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or d.project,
            database=get("FRANCINE_FIRESTORE_DATABASE", d.database),
            resources_bucket=get("FRANCINE_RESOURCES_BUCKET", d.resources_bucket),
            partials_bucket=get("FRANCINE_PARTIALS_BUCKET", d.partials_bucket),
            results_bucket=get("FRANCINE_RESULTS_BUCKET", d.results_bucket),
            produce_topic=get("FRANCINE_PRODUCE_TOPIC", d.produce_topic),
            events_topic=get("FRANCINE_EVENTS_TOPIC", d.events_topic),
            produce_shards=get("FRANCINE_PRODUCE_SHARDS", d.produce_shards),
            max_json_bytes=get("FRANCINE_MAX_JSON_BYTES", d.max_json_bytes),
            max_upload_bytes=get("FRANCINE_MAX_UPLOAD_BYTES", d.max_upload_bytes),
            max_resource_bytes=get("FRANCINE_MAX_RESOURCE_BYTES", d.max_resource_bytes),
            max_tasks=get("FRANCINE_MAX_TASKS", d.max_tasks),
            max_resources=get("FRANCINE_MAX_RESOURCES", d.max_resources),
            max_task_seconds=get("FRANCINE_MAX_TASK_SECONDS", d.max_task_seconds),
            admission_limit=get("FRANCINE_ADMISSION_LIMIT", d.admission_limit),
            block_timeout_s=get("FRANCINE_BLOCK_TIMEOUT_S", d.block_timeout_s),
            cache_dir=get("FRANCINE_CACHE_DIR", d.cache_dir),
        )

    def to_env(self) -> dict[str, str]:
        """The variables that make ``from_env`` return these settings."""
        return {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FRANCINE_FIRESTORE_DATABASE": self.database,
            "FRANCINE_RESOURCES_BUCKET": self.resources_bucket,
            "FRANCINE_PARTIALS_BUCKET": self.partials_bucket,
            "FRANCINE_RESULTS_BUCKET": self.results_bucket,
            "FRANCINE_PRODUCE_TOPIC": self.produce_topic,
            "FRANCINE_EVENTS_TOPIC": self.events_topic,
            "FRANCINE_PRODUCE_SHARDS": str(self.produce_shards),
            "FRANCINE_MAX_JSON_BYTES": str(self.max_json_bytes),
            "FRANCINE_MAX_UPLOAD_BYTES": str(self.max_upload_bytes),
            "FRANCINE_MAX_RESOURCE_BYTES": str(self.max_resource_bytes),
            "FRANCINE_MAX_TASKS": str(self.max_tasks),
            "FRANCINE_MAX_RESOURCES": str(self.max_resources),
            "FRANCINE_MAX_TASK_SECONDS": str(self.max_task_seconds),
            "FRANCINE_ADMISSION_LIMIT": str(self.admission_limit),
            "FRANCINE_BLOCK_TIMEOUT_S": str(self.block_timeout_s),
            "FRANCINE_CACHE_DIR": self.cache_dir,
        }
