"""Pulumi components that create Francine on Google Cloud.

Each module holds one concept: a component resource with its ``…Args`` dataclass.
``stack.build_stack`` wires them together; ``__main__.py`` exports its outputs.
"""
