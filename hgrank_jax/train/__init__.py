"""Training: ``train_and_evaluate`` (the one train loop), its objectives, train
states and steps, checkpoints, preemption handling, early stopping and writers."""

from hgrank_jax.train.loop import train_and_evaluate
from hgrank_jax.train.state import Objective
