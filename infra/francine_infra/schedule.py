"""Cloud Scheduler calls the watchdog function every minute.

The watchdog (``functions/watchdog``, ``shared/francine/handlers/watchdog.py``) is an HTTP
function that nobody else calls: private (``roles/run.invoker`` for the ``scheduler``
account only), reached with an OIDC token whose audience is its run.app URI. A sweep
that fails is not retried: the next one comes a minute later and is idempotent, and a
retry would only pile sweeps up behind a slow one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine_infra.options import child_options


@dataclass
class WatchdogScheduleArgs:
    project: str
    region: str
    name_prefix: str
    # The watchdog's run.app URI: the request's target and the token's audience.
    uri: pulumi.Input[str]
    # The account Cloud Scheduler signs the OIDC token as (holds run.invoker on it).
    service_account_email: pulumi.Input[str]
    # unix-cron; Cloud Scheduler's finest is every minute.
    schedule: str = "* * * * *"
    # How long Cloud Scheduler waits for one sweep (15 s to 30 min for HTTP targets).
    attempt_deadline_seconds: int = 180


class WatchdogSchedule(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: WatchdogScheduleArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:WatchdogSchedule", name, None, opts)
        self.job = gcp.cloudscheduler.Job(
            name,
            project=args.project,
            region=args.region,
            name=f"{args.name_prefix}-watchdog",
            description="Francine watchdog sweep: stragglers and stalled executions",
            schedule=args.schedule,
            time_zone="Etc/UTC",
            attempt_deadline=f"{args.attempt_deadline_seconds}s",
            retry_config=gcp.cloudscheduler.JobRetryConfigArgs(retry_count=0),
            http_target=gcp.cloudscheduler.JobHttpTargetArgs(
                uri=args.uri,
                http_method="POST",
                oidc_token=gcp.cloudscheduler.JobHttpTargetOidcTokenArgs(
                    service_account_email=args.service_account_email,
                    audience=args.uri,
                ),
            ),
            opts=child_options(self, opts),
        )
        self.register_outputs({"job": self.job.name})
