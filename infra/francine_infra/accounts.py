"""One service account per component, each with only the grants that component needs.

The accounts are created here; their grants are made where the granted resource lives
(``iam.AccessPolicy`` for the project, buckets, topics and registry; the render service
and the functions grant their own invokers; the push subscriptions grant the Pub/Sub
service agent what dead-lettering needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine_infra.options import child_options

# key → what the account is for (its description in the console).
ACCOUNTS: dict[str, str] = {
    "api": "Francine api function: records sessions and executions, stores resources, "
    "publishes production tasks.",
    "renderer": "Francine render service: reads scenes and resources, writes partial images, "
    "publishes task events, replaced tasks and the status of executions it fails.",
    "reducer": "Francine reducer function: combines partial images, stores results, "
    "schedules further tasks.",
    "pusher": "Identity in the OIDC token of Francine's Pub/Sub push requests: may only "
    "invoke the render service and the reducer.",
    "watchdog": "Francine watchdog function: speculative copies of stragglers, re-drives "
    "stalled executions, sets the render service's minimum instances.",
    "scheduler": "Identity in the OIDC token of Cloud Scheduler's calls to the watchdog: "
    "may only invoke it.",
    "builder": "Cloud Build identity for the Francine function builds and the render image.",
}


@dataclass
class ServiceAccountsArgs:
    project: str
    name_prefix: str


class ServiceAccounts(pulumi.ComponentResource):
    """``accounts[key]`` for each key of ``ACCOUNTS``; ids are ``<prefix>-<key>``."""

    def __init__(
        self, name: str, args: ServiceAccountsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:ServiceAccounts", name, None, opts)
        child = child_options(self, opts)
        self.accounts: dict[str, gcp.serviceaccount.Account] = {
            key: gcp.serviceaccount.Account(
                f"{name}-{key}",
                project=args.project,
                account_id=f"{args.name_prefix}-{key}",
                display_name=f"{args.name_prefix} {key}",
                description=description,
                opts=child,
            )
            for key, description in ACCOUNTS.items()
        }
        self.register_outputs({key: sa.email for key, sa in self.accounts.items()})

    def member(self, key: str) -> pulumi.Output[str]:
        """The IAM member string of one account: ``serviceAccount:<email>``."""
        return self.accounts[key].email.apply(lambda email: f"serviceAccount:{email}")

    def email(self, key: str) -> pulumi.Output[str]:
        return self.accounts[key].email
