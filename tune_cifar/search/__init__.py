"""The search: Ray Tune trials over a YAML search space (the only package that imports Ray)."""

__all__ = ["main"]


def main(argv=None):
    """``tune_cifar.search.main`` (the console script): imported on call, so that importing one module of this
    package (a Ray worker's trainable, the settings) does not import the whole command line and what it needs."""
    from .cli import main as cli_main

    return cli_main(argv)
