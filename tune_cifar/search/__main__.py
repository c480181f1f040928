"""``python -m tune_cifar.search``: see tune_cifar/search/cli.py."""

from .cli import main

if __name__ == "__main__":
    main()
