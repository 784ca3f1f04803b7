"""Settings of a Francine deployment, read from the environment.

The same variables configure the cloud (set by the Pulumi program) and the local stack
(set by ``francine stack up``); the Google clients find the emulators through their own
``*_EMULATOR_HOST`` variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    project: str = "francine-local"
    database: str = "(default)"
    resources_bucket: str = "francine-resources"
    partials_bucket: str = "francine-partials"
    results_bucket: str = "francine-results"
    produce_topic: str = "francine-produce"
    events_topic: str = "francine-events"
    #: Execution status changes, for other systems (francine/services/events.py has the schema).
    status_topic: str = "francine-execution-events"
    #: The longest one Server-Sent Events stream lives (under Cloud Run's request timeout).
    events_max_s: float = 3300.0
    #: Webhooks (notify_url) are retried until this long after the execution ended.
    notify_deadline_s: float = 3600.0
    #: Hosts that notify_url may name over http and at private addresses (comma
    #: separated). Empty in any deployment; the local tests receive webhooks on 127.0.0.1.
    notify_insecure_hosts: str = ""
    #: Production topics: 1 in the cloud; the local stack uses one per worker.
    produce_shards: int = 1
    #: Upper bounds of request bodies (docs/api.md: 1 MiB JSON, 512 MiB uploads; the cloud
    #: deployment lowers uploads to Cloud Run's 32 MiB request limit) and of any resource
    #: (a file attached by URL is not a request body).
    max_json_bytes: int = 1 << 20
    max_upload_bytes: int = 512 << 20
    max_resource_bytes: int = 512 << 20
    #: Larger results are answered with a redirect to a short-lived URL (Cloud Run caps
    #: response bodies at 32 MiB).
    max_response_bytes: int = 30 << 20
    #: The planner refuses executions with more tasks than this (Firestore writes,
    #: Pub/Sub messages and partial images all grow with it).
    max_tasks: int = 10_000
    #: Resources per session: every execution records their hashes in its document,
    #: which Firestore caps at 1 MiB.
    max_resources: int = 1_000
    #: The longest a production task may be estimated to take (the deployment's ack
    #: deadline and timeouts are sized for it): larger tiles are refused, and when the
    #: client gives no tile the planner picks one estimated at a quarter of it.
    max_task_s: float = 120.0
    #: The shortest a production task should be estimated to take: when one pass of a
    #: tile is shorter, a task renders several passes of it (0: one pass per task).
    #: Each task costs messages, documents and a partial image, whatever its size.
    min_task_s: float = 0.25
    #: Production tasks published at once per execution; the rest are published as
    #: earlier ones finish (0: all at once). Admission control for shared farms.
    admission_limit: int = 0
    #: Memory of a reducer instance: the planner refuses images it could not hold
    #: (francine/domain/reduction.py; 0: no check).
    reducer_memory_bytes: int = 1 << 30
    #: Bytes of fetched resources a worker keeps on its disk (in memory on Cloud Run),
    #: least recently used out.
    cache_bytes: int = 512 << 20
    #: Fault injection (francine/services/chaos.py), 0 in any real deployment: the probability
    #: that a push request crashes (before or after its work), and that a handled
    #: message is published twice.
    chaos_crash_rate: float = 0.0
    chaos_duplicate_rate: float = 0.0
    #: Warm-up (francine/services/warmup.py): the render service whose minimum instances large
    #: executions raise, as ``projects/P/locations/L/services/S`` ("" : none, locally),
    #: its max instances, and the production tasks from which an execution warms it.
    render_service: str = ""
    max_render_instances: int = 100
    warm_threshold: int = 50
    #: A speculative copy of a production task is cut into this many bands of rows
    #: that as many instances render at once (1: whole copies), when the producer's
    #: pixels do not depend on how a tile is cut; the end game then also copies tasks
    #: that started late (francine.domain.scheduler). Worth it where the farm has idle
    #: instances at the end of a render, i.e. one much larger than this.
    copy_pieces: int = 8
    #: Farm-wide admission (francine.domain.fair_share): production tasks published and not yet
    #: finished, across every execution, at most about this many (the render service's
    #: max instances × its concurrency); the rest wait in Firestore, taken in fair-share
    #: order as tasks finish. 0: every execution publishes its tasks at once.
    farm_slots: int = 0
    #: Fair-share weights per user, "alice=2,bob=0.5" (a user not named weighs 1).
    fair_weights: str = ""
    #: How far (in estimated task-seconds / weight) a user who was idle may start ahead
    #: of the farm's virtual time: a small render of a quiet user overtakes a backlog.
    fair_credit_s: float = 60.0
    #: How long ``?block=1`` waits before answering with the execution's status.
    block_timeout_s: float = 300.0
    #: Directory where a worker keeps fetched resources between tasks.
    cache_dir: str = "/tmp/francine-cache"
    #: Quotas per user (docs/api.md, "Quotas"); over one, a 429 with Retry-After. See quotas.py
    #: for why each default is what it is.
    quota_executions_in_flight: int = 20
    quota_tasks_in_flight: int = 5_000
    quota_stored_bytes: int = 20 << 30
    quota_cpu_seconds_per_day: float = 36_000.0
    #: Requests of one user waiting for a render at once (?block=1; GET / shares one).
    max_blocking_waits: int = 16
    #: Threads of the api process that run requests (waits and bodies do not hold one).
    api_threads: int = 32
    #: Seconds between garbage collections in the api process (retention.py; 0: none).
    gc_interval_s: float = 600.0
    #: The watchdog re-drives an execution whose tasks neither started nor finished
    #: for this long (longer than the longest task: ``max_task_s``).
    stall_s: float = 300.0
    #: How often the local stack's timer calls the watchdog (Cloud Scheduler: 60 s).
    watchdog_interval_s: float = 60.0
    #: What a render costs (a ``dry_run``: francine/services/quotes.py, francine/domain/
    #: pricing.py): the size of a render and a reducer instance (the deployment's
    #: renderCpu, renderMemory, reducerCpu; the reducer's memory is reducer_memory_bytes)
    #: and the public list prices in USD, before free tiers: Cloud Run's request-based
    #: billing in a tier-1 region (per vCPU-second, GiB-second and million requests),
    #: Firestore per 100,000 document reads and writes, Pub/Sub per TiB published or
    #: delivered (at least 1,000 bytes a request), Cloud Storage per 1,000 class A
    #: (writes, listings) and class B (reads) operations.
    render_cpu: float = 1.0
    render_memory_bytes: int = 2 << 30
    reducer_cpu: float = 1.0
    price_vcpu_second: float = 0.000024
    price_gib_second: float = 0.0000025
    price_million_requests: float = 0.40
    price_firestore_100k_reads: float = 0.06
    price_firestore_100k_writes: float = 0.18
    price_pubsub_tib: float = 40.0
    price_storage_1000_class_a: float = 0.005
    price_storage_1000_class_b: float = 0.0004

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {}
        project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT")
        if project:
            values["project"] = project
        for f in fields(cls):
            raw = env.get(ENV.get(f.name, ""))
            if raw:
                values[f.name] = type(getattr(DEFAULTS, f.name))(raw)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that make ``from_env`` return these settings."""
        return {ENV.get(f.name, "GOOGLE_CLOUD_PROJECT"): str(getattr(self, f.name))
                for f in fields(self)}


#: The environment variable of each setting (``project`` is GOOGLE_CLOUD_PROJECT).
ENV = {f.name: "FRANCINE_" + f.name.upper() for f in fields(Settings) if f.name != "project"}
ENV["database"] = "FRANCINE_FIRESTORE_DATABASE"
DEFAULTS = Settings()
