"""Francine on Google Cloud: ``pulumi up`` creates it, ``pulumi destroy`` removes it.

See README.md in this directory for the configuration and every command from an
empty project to a first render.
"""

import pulumi
from francine_infra.config import load_config
from francine_infra.stack import build_stack

for name, value in build_stack(load_config()).items():
    pulumi.export(name, value)
