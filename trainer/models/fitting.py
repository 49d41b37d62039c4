"""Helpers shared by the Keras fits of the build: class weights and a per-epoch log line."""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("trainer")


def class_weights(y: np.ndarray, n: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=n).astype(float)
    return {i: float(len(y) / (n * c)) if c else 0.0 for i, c in enumerate(counts)}


def epoch_log(name: str):
    """A Keras callback that logs each epoch's metrics (training runs with verbose=0)."""
    import keras

    def done(epoch: int, logs: dict | None) -> None:
        log.info("%s epoch %d: %s", name, epoch + 1,
                 ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate"))

    return keras.callbacks.LambdaCallback(on_epoch_end=done)
