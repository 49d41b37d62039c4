"""The input stage every sequence classifier shares (the proposed model and both baselines,
so they stay compared on identical inputs): standardisation, Gaussian input noise while
training, and a per-step projection of the image columns.

Why the projection: after IZOA a fusion step holds about a thousand image columns beside 64
audio columns. Fed straight into the Bi-LSTM, the image columns outnumber the audio 16 to 1
and the network learned the training speakers instead of their voices. In one side-by-side
run on the same fusion data, held-out RAVDESS actors, audio only: 0.23 with the raw step,
0.43 with the image columns projected to 64, 0.49 for the same network on the audio columns
alone. The audio codes are already a 32-d autoencoder bottleneck (mean and std per window)
and pass through unchanged, as do the presence flags.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from trainer.models.standardise import standardiser

IMAGE_WIDTH = 64        # image columns per step after the projection
UTTERANCE_WIDTH = 64    # utterance side-input columns per step after their projection
INPUT_NOISE = 0.5       # std of the Gaussian noise on the standardised inputs (training only)
IMAGE_DROPOUT = 0.3     # dropout on the projected image columns


def _projected(x, start: int, end: int, width: int, name: str):
    block = layers.Lambda(lambda t: t[..., start:end], name=f"{name}_columns")(x)
    block = layers.Dense(width, activation="relu", name=f"{name}_projection")(block)
    return layers.Dropout(IMAGE_DROPOUT, name=f"{name}_dropout")(block)


def input_stage(x_train: np.ndarray, n_image: int,
                utterance: tuple[int, int] | None = None) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """(input, stage output) for sequences shaped like `x_train` [n, steps, features] whose
    first `n_image` columns are image features (the mask keeps the step layout's order) and
    whose columns [utterance[0], utterance[1]) hold the per-utterance audio side input (about
    700 columns of statistics: projected like the image columns so they do not drown the
    rest). Standardisation is fitted on `x_train`; image and utterance blocks come out as
    IMAGE_WIDTH and UTTERANCE_WIDTH columns, the other columns unchanged."""
    features = x_train.shape[-1]
    inp = keras.Input(shape=(x_train.shape[1], features), dtype="float32")
    x = standardiser(x_train.reshape(-1, features))(inp)
    x = layers.GaussianNoise(INPUT_NOISE, name="input_noise")(x)
    u0, u1 = utterance if utterance and utterance[1] > utterance[0] else (features, features)
    if n_image == 0 and u0 == u1:
        return inp, x
    parts = [_projected(x, 0, n_image, IMAGE_WIDTH, "image")] if n_image else []
    parts.append(layers.Lambda(lambda t: t[..., n_image:u0], name="audio_columns")(x))
    if u1 > u0:
        parts.append(_projected(x, u0, u1, UTTERANCE_WIDTH, "utterance"))
        parts.append(layers.Lambda(lambda t: t[..., u1:], name="flag_columns")(x))
    return inp, layers.Concatenate(name="step")(parts)
