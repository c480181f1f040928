"""The typed config: one dataclass per section (run, data, task, trainer, model, optimizer) and ``Config``.

What keys exist, their types and defaults; YAML and Hydra never reach past ``config.py``, which builds these
from a plain dict and checks their values (``config_from_dict``). No imports of the package: every module
may take these types, including the registries the checks read (optim, data.sources).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Union


@dataclass
class RunConfig:
    experiment: str = "cifar10_resnet18"
    predict: bool = False
    checkpoint_path: Optional[str] = None
    resume: bool = False  # with checkpoint_path: True resumes training state, False loads weights only
    seed: int = 42  # the validation split and subsets; also training's draws unless train_seed is set
    # weight init, shuffle order and augmentation draws; None: run.seed. A search's re-evaluation trains its best
    # configurations again with other training seeds on the same validation split (search.final)
    train_seed: Optional[int] = None
    output_dir: str = "outputs"

    @property
    def training_seed(self) -> int:
        """The seed of training's random draws (weights, shuffle order, augmentation)."""
        return self.seed if self.train_seed is None else self.train_seed


@dataclass
class AugmentConfig:
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0


@dataclass
class DataConfig:
    name: str = "cifar10"
    num_classes: int = 10
    dataset_path: str = "data"
    download: bool = True
    train_batch_size: int = 128
    inference_batch_size: int = 512
    num_workers: int = 0
    val_fraction: float = 0.1
    train_subset: Optional[int] = None
    val_subset: Optional[int] = None
    test_subset: Optional[int] = None
    cifar100_labels: str = "fine"
    image_size: Optional[int] = None
    labels_csv: Optional[str] = None
    label_groups: Optional[dict] = None  # {"vehicle": ["airplane", ...], "animal": [...]}
    on_device: Optional[bool] = None  # keep the uint8 data on the training device; None: on GPUs
    augment: AugmentConfig = field(default_factory=AugmentConfig)


TASK_KIND = {  # task.task -> the kind torchmetrics and the losses know
    "classification_binary": "binary",
    "classification_multiclass": "multiclass",
    "classification_multilabel": "multilabel",
}


@dataclass
class TaskConfig:
    task: str = "classification_multiclass"
    label_smoothing: float = 0.0
    threshold: float = 0.5  # binary / multilabel decision threshold
    monitor: str = "accuracy/val"
    monitor_mode: Optional[str] = None  # max or min; None: min for a loss (loss/val), else max
    # The metrics to compute. Users write them as optimizer.metrics (the seed's key); once parsed they
    # are the task's (config_from_dict copies them here), so metric code never reads the optimizer section.
    metrics: dict = field(default_factory=dict)


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: int = 1
    max_epochs: int = 10
    val_check_interval: Union[int, float] = 1.0  # Lightning's meaning: int batches, float epoch fraction
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    fast_dev_run: bool = False
    limit_train_batches: Optional[Union[int, float]] = None  # likewise
    limit_val_batches: Optional[Union[int, float]] = None
    limit_test_batches: Optional[Union[int, float]] = None
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    gradient_clip_val: Optional[float] = None
    enable_progress_bar: bool = True


@dataclass
class FirstConvModifier:
    num_input_channels: int


@dataclass
class LastLayerModifier:
    num_outputs: int


@dataclass
class ModifiersConfig:
    cifar_stem: bool = False
    change_first_convolutional_layer: Optional[FirstConvModifier] = None
    change_last_layer: Optional[LastLayerModifier] = None
    change_last_layer_to_identity: bool = False


@dataclass
class ModelConfig:
    provider_name: str = "timm"
    model_name: str = "resnet18"
    model_kwargs: dict = field(default_factory=dict)
    modifiers: ModifiersConfig = field(default_factory=ModifiersConfig)


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 30  # epochs, for "step"
    gamma: float = 0.1


@dataclass
class OptimizerConfig:
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    metrics: dict = field(default_factory=lambda: {"accuracy": {}})


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    def to_dict(self) -> dict:
        """The config as users write it (task.metrics is optimizer.metrics: not written twice)."""
        data = dataclasses.asdict(self)
        data["task"].pop("metrics", None)
        return data
