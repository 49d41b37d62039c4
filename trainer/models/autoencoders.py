"""Dense autoencoders (paper Alg. 1 / Alg. 2): 64-32-64, MSE loss, Adam.

Used twice by the pipeline (design §2): on MFCC frames (audio codes per frame) and on
flattened face crops (frame latents for the summary-frame k-means). Only the encoder is
exported to ONNX; the decoder exists to train it.
"""
from __future__ import annotations

import keras
from keras import layers


def build_dense_autoencoder(input_dim: int, hidden: int = 64, bottleneck: int = 32, *,
                            name: str, learning_rate: float = 1e-3) -> tuple[keras.Model, keras.Model]:
    """Return ``(autoencoder, encoder)``.

    ``autoencoder``: input_dim -> hidden (ReLU) -> bottleneck (linear) -> hidden (ReLU) ->
    input_dim (linear), compiled with Adam + MSE. ``encoder``: input_dim -> bottleneck,
    sharing the autoencoder's layers (training the autoencoder trains the encoder).
    The bottleneck is linear so codes keep their sign and no unit can die; inputs are
    expected to be standardised by the caller (the pipeline), since the loss is MSE.
    """
    if input_dim < 1 or hidden < 1 or bottleneck < 1:
        raise ValueError(f"dimensions must be positive, got {input_dim=}, {hidden=}, {bottleneck=}")
    inputs = keras.Input(shape=(input_dim,), dtype="float32", name=f"{name}_input")
    h = layers.Dense(hidden, activation="relu", name=f"{name}_enc_hidden")(inputs)
    code = layers.Dense(bottleneck, activation=None, name=f"{name}_code")(h)
    d = layers.Dense(hidden, activation="relu", name=f"{name}_dec_hidden")(code)
    recon = layers.Dense(input_dim, activation=None, name=f"{name}_reconstruction")(d)

    autoencoder = keras.Model(inputs, recon, name=f"{name}_autoencoder")
    autoencoder.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    encoder = keras.Model(inputs, code, name=f"{name}_encoder")
    return autoencoder, encoder
