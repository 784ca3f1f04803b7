"""Resource options shared by the components."""

from __future__ import annotations

import pulumi


def child_options(
    parent: pulumi.Resource, opts: pulumi.ResourceOptions | None
) -> pulumi.ResourceOptions:
    """Options for the children of a component: parented to it, and waiting for what
    the component was told to wait for.

    A component's ``depends_on`` does not reach the resources created inside it (only
    resources depending on the component wait for its children), so every child is
    given the component's dependencies explicitly: nothing is created in an empty
    project before the APIs it needs are enabled.
    """
    depends_on = opts.depends_on if opts is not None else None
    return pulumi.ResourceOptions(parent=parent, depends_on=depends_on)


def after(
    parent: pulumi.Resource, opts: pulumi.ResourceOptions | None, previous: pulumi.Resource
) -> pulumi.ResourceOptions:
    """``child_options`` that also wait for ``previous``: for resources that the
    platform refuses to change at the same time (chained one after the other)."""
    depends_on = opts.depends_on if opts is not None else None
    inherited = list(depends_on) if isinstance(depends_on, list | tuple) else []
    return pulumi.ResourceOptions(parent=parent, depends_on=[*inherited, previous])
