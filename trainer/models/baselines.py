"""Baselines the paper compares against, on the same inputs ``(steps, features)`` and with
the same output (softmax over the classes) as :func:`build_bilstm_sa`."""
from __future__ import annotations

import keras
from keras import layers

from trainer.models.bilstm_sa import compile_classifier


def build_bilstm(steps: int | None, features: int, n_classes: int, *, units: int = 64, dropout: float = 0.3,
                 learning_rate: float = 1e-3) -> keras.Model:
    """Plain Bi-LSTM (last states of both directions concatenated), no attention."""
    inputs = keras.Input(shape=(steps, features), dtype="float32", name="sequence")
    x = layers.Bidirectional(layers.LSTM(units), name="bilstm")(inputs)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return compile_classifier(keras.Model(inputs, outputs, name="bilstm"), learning_rate)


def build_cnn(steps: int | None, features: int, n_classes: int, *, filters: int = 64, dropout: float = 0.3,
              kernel_size: int = 3, learning_rate: float = 1e-3) -> keras.Model:
    """1-D CNN over time steps: two Conv1D(filters, kernel_size, 'same') + ReLU blocks,
    global max and average pooling over time (concatenated), dropout, Dense softmax."""
    inputs = keras.Input(shape=(steps, features), dtype="float32", name="sequence")
    x = layers.Conv1D(filters, kernel_size, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv1D(filters, kernel_size, padding="same", activation="relu", name="conv2")(x)
    x = layers.Concatenate(name="pool")([layers.GlobalMaxPooling1D(name="max_pool")(x),
                                         layers.GlobalAveragePooling1D(name="mean_pool")(x)])
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return compile_classifier(keras.Model(inputs, outputs, name="cnn"), learning_rate)
