"""tune_cifar: hyperparameter search for image classification (Lightning + Ray Tune + Optuna)."""

__version__ = "0.1.0"
