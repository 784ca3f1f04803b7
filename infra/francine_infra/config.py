"""The stack's configuration: read once from ``pulumi config``, validated, then immutable.

Every value has a default except the project; ``infra/README.md`` lists them all. The
validation happens here, before any resource is declared, so that a wrong value fails
``pulumi preview`` with a sentence instead of failing ``pulumi up`` halfway through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pulumi

from francine.domain import topology

# The repository root: the function archives and the Dockerfile are built from it.
REPO_ROOT = Path(__file__).resolve().parents[2]

# Pub/Sub waits at most 600 s for a push request (the longest ack deadline it accepts).
MAX_ACK_DEADLINE_SECONDS = 600
MIN_ACK_DEADLINE_SECONDS = 10
# A blocking api request answers this long before the function's own timeout.
BLOCK_MARGIN_SECONDS = 60
# IAM: "Changes to allow or deny policies typically propagate in 2 minutes, but could
# potentially take 7 minutes or longer" (cloud.google.com/iam/docs/access-change-propagation).
DEFAULT_IAM_PROPAGATION_SECONDS = 180

# Cloud Run CPU values (whole vCPUs) and the memory range each one allows, in MiB.
# https://cloud.google.com/run/docs/configuring/services/cpu and .../memory-limits
CPU_MEMORY_MIB: dict[str, tuple[int, int]] = {
    "1": (128, 4 * 1024),
    "2": (128, 8 * 1024),
    "4": (2 * 1024, 16 * 1024),
    "6": (4 * 1024, 24 * 1024),
    "8": (4 * 1024, 32 * 1024),
}
# The second generation execution environment needs at least 512 MiB.
GEN2_MIN_MEMORY_MIB = 512

EXECUTION_ENVIRONMENTS = {
    "gen1": "EXECUTION_ENVIRONMENT_GEN1",
    "gen2": "EXECUTION_ENVIRONMENT_GEN2",
}

_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,18}[a-z0-9]$")
#: An IAM principal that may be named in a grant (not allUsers: see ``publicApi``).
_MEMBER = re.compile(r"^(user|group|serviceAccount|domain|principal|principalSet):\S+$")
_ORIGIN = re.compile(r"^https?://[^/\s]+$")
#: Cloud Storage's soft-delete retention, when on: 7 to 90 days.
SOFT_DELETE_DAYS = (7, 90)
_MEMORY = re.compile(r"^(\d+)(Mi|Gi)$")


class ConfigError(ValueError):
    """A configuration value that cannot produce a working stack."""


def memory_mib(value: str) -> int:
    """``"512Mi"`` → 512, ``"2Gi"`` → 2048; ``ConfigError`` for anything else."""
    match = _MEMORY.match(value)
    if not match:
        raise ConfigError(f"memory {value!r}: write it as a whole number of Mi or Gi, e.g. 2Gi")
    amount, unit = int(match.group(1)), match.group(2)
    return amount * (1024 if unit == "Gi" else 1)


@dataclass(frozen=True)
class FrancineConfig:
    """Everything the program reads from ``pulumi config`` (see infra/README.md)."""

    project: str
    region: str = "us-central1"
    # Names every service account, topic, service and function: two stacks with two
    # prefixes can share a project.
    name_prefix: str = "francine"
    # Bucket names are global: "<project>-<prefix>" unless set.
    bucket_prefix: str = ""
    bucket_location: str = ""
    # The render container; unset on the very first `pulumi up` (the registry that will
    # hold it does not exist yet), in which case the render service is not created.
    image: str | None = None
    max_render_instances: int = 10
    render_cpu: str = "1"
    render_memory: str = "2Gi"
    execution_environment: str = "gen2"
    # The planner's bound on one task; the ack deadline is this plus the overhead.
    max_task_s: int = 120
    task_overhead_seconds: int = 60
    # Production tasks in flight per execution; None means "max_render_instances".
    admission_limit: int | None = None
    # Production tasks in flight across all executions (farm-wide admission with fair
    # share, francine.services.farm; it replaces the per-execution limit); None means
    # "max_render_instances", 0 turns it off.
    farm_slots: int | None = None
    # Added to an endpoint's timeout to make its ack deadline: a cold start (the last of
    # many fresh instances starts ~45 s after the first request) and the time a request
    # waits in Cloud Run's queue for a free instance (infra/autoscaling.md).
    ack_margin_seconds: int = 60
    max_delivery_attempts: int = topology.CLOUD_RETRY.max_delivery_attempts
    # How long the program waits after making grants before anything uses them.
    iam_propagation_seconds: int = DEFAULT_IAM_PROPAGATION_SECONDS
    # Lifecycle rules, in days since an object was written (0: keep forever).
    partials_retention_days: int = 3
    results_retention_days: int = 30
    resources_retention_days: int = 90
    sources_retention_days: int = 30
    # Artifact Registry: per image name, the newest `images_to_keep` versions are kept;
    # older ones are deleted once they are `image_retention_days` old.
    images_to_keep: int = 5
    image_retention_days: int = 7
    firestore_database: str = "(default)"
    firestore_location: str = ""
    functions_runtime: str = "python312"
    api_max_instances: int = 10
    # `?block=1` waits this minus BLOCK_MARGIN_SECONDS, then answers with the status.
    api_timeout_seconds: int = 360
    api_memory: str = "512Mi"
    api_concurrency: int = 8
    reducer_max_instances: int = 50
    reducer_cpu: str = "1"
    reducer_memory: str = "1Gi"
    # When Cloud Scheduler calls the watchdog (unix-cron, UTC): every minute.
    watchdog_schedule: str = "* * * * *"
    force_destroy: bool = True
    # Days a deleted result or resource stays recoverable (and billed): 0 (off) or
    # 7 to 90. Partials and function archives never are (storage.py).
    soft_delete_days: int = 0
    # Origins whose pages may read large results through signed URLs (the viewer,
    # served by the api); "*" by default (storage.py says why that is safe).
    results_cors_origins: tuple[str, ...] = ("*",)
    # allUsers may invoke the api (it checks API keys itself). An organisation with
    # "Domain restricted sharing" refuses that grant: then set false, and name who may
    # call it (an API gateway's account, a group) in api_invokers.
    public_api: bool = True
    api_invokers: tuple[str, ...] = ()
    repo_root: Path = field(default=REPO_ROOT, compare=False)

    def __post_init__(self) -> None:
        # Fill the defaults that depend on other values.
        if not self.bucket_prefix:
            object.__setattr__(self, "bucket_prefix", f"{self.project}-{self.name_prefix}")
        if not self.bucket_location:
            object.__setattr__(self, "bucket_location", self.region)
        if not self.firestore_location:
            object.__setattr__(self, "firestore_location", self.region)
        if self.admission_limit is None:
            object.__setattr__(self, "admission_limit", self.max_render_instances)
        if self.farm_slots is None:
            object.__setattr__(self, "farm_slots", self.max_render_instances)
        self.validate()

    # -- derived values -------------------------------------------------------------

    @property
    def request_timeout_seconds(self) -> int:
        """The render service's and the reducer's request timeout: the longest task plus
        its overhead (fetching the scene and resources, uploading the result)."""
        return self.max_task_s + self.task_overhead_seconds

    @property
    def ack_deadline_seconds(self) -> int:
        """How long Pub/Sub waits for one push request: the endpoint's timeout plus the
        margin for a cold start and queueing. Cloud Run cuts a request off at its
        timeout, so a delivery is never redelivered while its first attempt still runs.
        """
        return self.request_timeout_seconds + self.ack_margin_seconds

    @property
    def stall_s(self) -> int:
        """After how long without a task starting or finishing the watchdog re-drives an
        execution (``FRANCINE_STALL_S``): a delivery that ran to its timeout and
        then waited out its ack deadline is not a stall yet."""
        return self.request_timeout_seconds + self.ack_deadline_seconds

    @property
    def block_timeout_seconds(self) -> int:
        """How long ``?block=1`` waits for the image (``FRANCINE_BLOCK_TIMEOUT_S``)."""
        return self.api_timeout_seconds - BLOCK_MARGIN_SECONDS

    @property
    def execution_environment_value(self) -> str:
        return EXECUTION_ENVIRONMENTS[self.execution_environment]

    # -- validation -----------------------------------------------------------------

    def validate(self) -> None:
        if not self.project:
            raise ConfigError("gcp:project is required")
        if not _PREFIX.match(self.name_prefix):
            raise ConfigError(
                f"namePrefix {self.name_prefix!r}: 2 to 20 lowercase letters, digits or '-', "
                "starting with a letter (service account ids are limited to 30 characters)"
            )
        if not 3 <= len(self.bucket_prefix) + len("-resources") <= 63:
            raise ConfigError(f"bucketPrefix {self.bucket_prefix!r} makes bucket names too long")
        if self.image is not None and not self.image.strip():
            raise ConfigError("image: leave it unset or name a container image")
        if self.max_render_instances < 1:
            raise ConfigError("maxRenderInstances must be at least 1")
        if self.execution_environment not in EXECUTION_ENVIRONMENTS:
            raise ConfigError(
                f"executionEnvironment {self.execution_environment!r}: one of "
                f"{sorted(EXECUTION_ENVIRONMENTS)}"
            )
        if self.render_cpu not in CPU_MEMORY_MIB:
            raise ConfigError(f"renderCpu {self.render_cpu!r}: one of {list(CPU_MEMORY_MIB)}")
        low, high = CPU_MEMORY_MIB[self.render_cpu]
        if self.execution_environment == "gen2":
            low = max(low, GEN2_MIN_MEMORY_MIB)
        render_memory = memory_mib(self.render_memory)
        if not low <= render_memory <= high:
            raise ConfigError(
                f"renderMemory {self.render_memory}: with renderCpu {self.render_cpu} and "
                f"{self.execution_environment}, Cloud Run allows {low}Mi to {high}Mi"
            )
        if self.max_task_s < 1 or self.task_overhead_seconds < 0:
            raise ConfigError(
                "maxTaskSeconds must be positive and taskOverheadSeconds not negative"
            )
        if self.ack_margin_seconds < 30:
            raise ConfigError(
                "ackMarginSeconds: at least 30 (a cold start and queueing come before the work)"
            )
        if not MIN_ACK_DEADLINE_SECONDS <= self.ack_deadline_seconds <= MAX_ACK_DEADLINE_SECONDS:
            raise ConfigError(
                f"maxTaskSeconds + taskOverheadSeconds + ackMarginSeconds = "
                f"{self.ack_deadline_seconds} s: a Pub/Sub push must be answered within "
                f"{MAX_ACK_DEADLINE_SECONDS} s, so plan smaller tasks"
            )
        if not 0 <= self.iam_propagation_seconds <= 900:
            raise ConfigError("iamPropagationSeconds: 0 to 900")
        for key, days in (
            ("resultsRetentionDays", self.results_retention_days),
            ("resourcesRetentionDays", self.resources_retention_days),
            ("sourcesRetentionDays", self.sources_retention_days),
        ):
            if days < 0:
                raise ConfigError(f"{key}: a number of days, or 0 to keep objects forever")
        if self.images_to_keep < 1 or self.image_retention_days < 1:
            raise ConfigError("imagesToKeep and imageRetentionDays must be at least 1")
        if self.admission_limit is not None and self.admission_limit < 0:
            raise ConfigError("admissionLimit must be 0 (unlimited) or positive")
        if self.farm_slots is not None and self.farm_slots < 0:
            raise ConfigError("farmSlots must be 0 (off) or positive")
        if not 5 <= self.max_delivery_attempts <= 100:
            raise ConfigError("maxDeliveryAttempts: Pub/Sub accepts 5 to 100")
        if self.partials_retention_days < 1:
            raise ConfigError("partialsRetentionDays must be at least 1")
        if not 2 * BLOCK_MARGIN_SECONDS <= self.api_timeout_seconds <= 3600:
            raise ConfigError(
                f"apiTimeoutSeconds: {2 * BLOCK_MARGIN_SECONDS} to 3600 (an HTTP function's "
                f"limit); ?block=1 answers {BLOCK_MARGIN_SECONDS} s before it"
            )
        memory_mib(self.api_memory)
        memory_mib(self.reducer_memory)
        if self.api_max_instances < 1 or self.reducer_max_instances < 1:
            raise ConfigError("apiMaxInstances and reducerMaxInstances must be at least 1")
        if self.api_concurrency < 1:
            raise ConfigError("apiConcurrency must be at least 1")
        if self.soft_delete_days and not (
            SOFT_DELETE_DAYS[0] <= self.soft_delete_days <= SOFT_DELETE_DAYS[1]
        ):
            raise ConfigError(
                "softDeleteDays: 0 (deleted objects are gone at once) or "
                f"{SOFT_DELETE_DAYS[0]} to {SOFT_DELETE_DAYS[1]} (Cloud Storage's range)"
            )
        for origin in self.results_cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ConfigError(
                    f"resultsCorsOrigins: {origin!r} is not an origin: '*' or "
                    "https://host[:port], without a path"
                )
        for member in self.api_invokers:
            if member in ("allUsers", "allAuthenticatedUsers"):
                raise ConfigError(
                    f"apiInvokers: {member} makes the api public: set publicApi instead"
                )
            if not _MEMBER.match(member):
                raise ConfigError(
                    f"apiInvokers: {member!r} is not an IAM principal (user:, group:, "
                    "serviceAccount:, domain:, principal: or principalSet:)"
                )
        if len(self.watchdog_schedule.split()) != 5:
            raise ConfigError(
                f"watchdogSchedule {self.watchdog_schedule!r}: a unix-cron schedule of five "
                "fields, e.g. '* * * * *' (every minute)"
            )


def load_config() -> FrancineConfig:
    """Read the stack's configuration (``gcp:project``, ``gcp:region``, ``francine:*``)."""
    gcp = pulumi.Config("gcp")
    conf = pulumi.Config("francine")
    defaults = FrancineConfig(project="defaults-only", image=None)

    def text(key: str, default: str) -> str:
        return conf.get(key) or default

    def integer(key: str, default: int | None) -> int | None:
        value = conf.get_int(key)
        return default if value is None else value

    def boolean(key: str, default: bool) -> bool:
        value = conf.get_bool(key)
        return default if value is None else value

    def items(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A comma-separated list; set to "" for none."""
        value = conf.get(key)
        if value is None:
            return default
        return tuple(item.strip() for item in value.split(",") if item.strip())

    return FrancineConfig(
        project=gcp.require("project"),
        region=gcp.get("region") or defaults.region,
        name_prefix=text("namePrefix", defaults.name_prefix),
        bucket_prefix=conf.get("bucketPrefix") or "",
        bucket_location=conf.get("bucketLocation") or "",
        image=conf.get("image") or None,
        max_render_instances=integer("maxRenderInstances", defaults.max_render_instances),
        render_cpu=text("renderCpu", defaults.render_cpu),
        render_memory=text("renderMemory", defaults.render_memory),
        execution_environment=text("executionEnvironment", defaults.execution_environment),
        max_task_s=integer("maxTaskSeconds", defaults.max_task_s),
        task_overhead_seconds=integer("taskOverheadSeconds", defaults.task_overhead_seconds),
        admission_limit=integer("admissionLimit", None),
        farm_slots=integer("farmSlots", None),
        ack_margin_seconds=integer("ackMarginSeconds", defaults.ack_margin_seconds),
        max_delivery_attempts=integer("maxDeliveryAttempts", defaults.max_delivery_attempts),
        iam_propagation_seconds=integer(
            "iamPropagationSeconds", defaults.iam_propagation_seconds
        ),
        partials_retention_days=integer("partialsRetentionDays", defaults.partials_retention_days),
        results_retention_days=integer("resultsRetentionDays", defaults.results_retention_days),
        resources_retention_days=integer(
            "resourcesRetentionDays", defaults.resources_retention_days
        ),
        sources_retention_days=integer("sourcesRetentionDays", defaults.sources_retention_days),
        images_to_keep=integer("imagesToKeep", defaults.images_to_keep),
        image_retention_days=integer("imageRetentionDays", defaults.image_retention_days),
        firestore_database=text("firestoreDatabase", defaults.firestore_database),
        firestore_location=conf.get("firestoreLocation") or "",
        functions_runtime=text("functionsRuntime", defaults.functions_runtime),
        api_max_instances=integer("apiMaxInstances", defaults.api_max_instances),
        api_timeout_seconds=integer("apiTimeoutSeconds", defaults.api_timeout_seconds),
        api_memory=text("apiMemory", defaults.api_memory),
        api_concurrency=integer("apiConcurrency", defaults.api_concurrency),
        reducer_max_instances=integer("reducerMaxInstances", defaults.reducer_max_instances),
        reducer_cpu=text("reducerCpu", defaults.reducer_cpu),
        reducer_memory=text("reducerMemory", defaults.reducer_memory),
        watchdog_schedule=text("watchdogSchedule", defaults.watchdog_schedule),
        force_destroy=boolean("forceDestroy", defaults.force_destroy),
        soft_delete_days=integer("softDeleteDays", defaults.soft_delete_days),
        results_cors_origins=items("resultsCorsOrigins", defaults.results_cors_origins),
        public_api=boolean("publicApi", defaults.public_api),
        api_invokers=items("apiInvokers", defaults.api_invokers),
    )
