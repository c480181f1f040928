"""``python -m tune_cifar.predict``: see tune_cifar/predict/cli.py."""

from .cli import main

if __name__ == "__main__":
    main()
