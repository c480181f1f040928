"""The search: Ray Tune trials over a YAML search space (the only package that imports Ray)."""

from .cli import main

__all__ = ["main"]
