"""Training: learning-rate schedules, the training loop, checkpoints and resume, distributed runs."""

from attnseg.training.schedules import make_schedule, poly_lr, warmup_cosine_lr

__all__ = ["make_schedule", "poly_lr", "warmup_cosine_lr"]
