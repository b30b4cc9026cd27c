"""Training: learning-rate schedules, the training loop, checkpoints and resume, distributed runs.

``train(data, out)`` goes from a dataset folder to a run folder; ``cross_validate(data, out)``
trains every fold and scores the out-of-fold predictions; ``fit`` is the loop on cases in memory. See ``attnseg.training.run`` for the run-folder layout.
"""

from attnseg.training.checkpointing import load_checkpoint, save_checkpoint
from attnseg.training.cross_validation import CrossValidationResult, cross_validate
from attnseg.training.loop import TrainingDiverged, TrainResult, fit
from attnseg.training.run import load_run_config, train
from attnseg.training.schedules import make_schedule, poly_lr, warmup_cosine_lr

__all__ = [
    "CrossValidationResult",
    "TrainResult",
    "TrainingDiverged",
    "cross_validate",
    "fit",
    "load_checkpoint",
    "load_run_config",
    "make_schedule",
    "poly_lr",
    "save_checkpoint",
    "train",
    "warmup_cosine_lr",
]
