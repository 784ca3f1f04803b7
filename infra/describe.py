"""Describe a stack without a cloud: run the program under Pulumi's mocks and print
the resources it declares, by type, and every grant, by member.

    .venv/bin/python infra/describe.py                       # the default test stack
    .venv/bin/python infra/describe.py francine:maxRenderInstances=50 francine:image=

Arguments are ``key=value`` config overrides of ``DEFAULT_TEST_CONFIG`` (an empty value
removes the key).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from francine_infra.mocks import DEFAULT_TEST_CONFIG, Recording, run_program  # noqa: E402


def describe(recording: Recording) -> str:
    custom = recording.custom_resources
    components = [r for r in recording.resources if not r.custom]
    lines = [
        f"{len(custom)} cloud resources in {len(components)} components; `pulumi up` also "
        f"counts the stack and the default gcp provider: {len(custom) + len(components) + 2}",
        "",
        "resources by type:",
    ]
    for type_token, count in sorted(Counter(r.type for r in custom).items()):
        lines.append(f"  {count:3d}  {type_token}")
    lines += ["", "grants by member:"]
    for member, roles in recording.roles_by_member().items():
        lines.append(f"  {member}")
        lines += [f"      {role:32s} on {scope}" for role, scope in roles]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    config = dict(DEFAULT_TEST_CONFIG)
    for argument in argv:
        key, _, value = argument.partition("=")
        if value:
            config[key] = value
        else:
            config.pop(key, None)
    print(describe(run_program(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
