"""Francine: a render farm that runs as a serverless pipeline on Google Cloud."""

__version__ = "0.1.0"
