"""The proposed classifier (paper §3.2, Alg. 5): Bi-LSTM -> multi-head scaled dot-product
self-attention with a residual connection and LayerNorm -> pooling over time -> dropout ->
softmax, over the fusion sequence of T = K steps (design §2.5-2.7).
"""
from __future__ import annotations

import keras
from keras import layers

POOLINGS = ("mean", "attention")


def attention_pool(x, *, name: str):
    """Attention pooling over time from built-in layers only (so the model saves and
    exports without custom objects): score_t = w·h_t, a = softmax_t(score), out = Σ a_t h_t."""
    scores = layers.Dense(1, use_bias=False, name=f"{name}_score")(x)        # (B, T, 1)
    weights = layers.Softmax(axis=1, name=f"{name}_weights")(scores)         # (B, T, 1)
    pooled = layers.Dot(axes=1, name=f"{name}_sum")([weights, x])            # (B, 1, D)
    return layers.Flatten(name=f"{name}_flatten")(pooled)                    # (B, D)


def compile_classifier(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_bilstm_sa(steps: int | None, features: int, n_classes: int, *, units: int = 64, heads: int = 4,
                    key_dim: int = 32, dropout: float = 0.3, pooling: str = "attention",
                    learning_rate: float = 1e-3) -> keras.Model:
    """Input ``(steps, features)`` float32 -> ``(n_classes,)`` softmax probabilities, compiled
    (Adam, sparse categorical crossentropy, accuracy).

    Bi-LSTM(units, return_sequences) gives H (B, T, 2·units); MultiHeadAttention(heads,
    key_dim) computes softmax(Q Kᵀ / sqrt(key_dim)) V per head on H (self-attention) and
    projects back to 2·units; out = LayerNorm(H + Dropout(attn)); then mean or attention
    pooling over time, dropout and a Dense softmax. ``steps`` may be None (any length).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    inputs = keras.Input(shape=(steps, features), dtype="float32", name="sequence")
    h = layers.Bidirectional(layers.LSTM(units, return_sequences=True), name="bilstm")(inputs)
    attn = layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim, dropout=0.0,
                                     name="self_attention")(h, h)
    attn = layers.Dropout(dropout, name="attention_dropout")(attn)
    x = layers.Add(name="residual")([h, attn])
    x = layers.LayerNormalization(epsilon=1e-6, name="layer_norm")(x)
    if pooling == "mean":
        x = layers.GlobalAveragePooling1D(name="mean_pool")(x)
    else:
        x = attention_pool(x, name="attention_pool")
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return compile_classifier(keras.Model(inputs, outputs, name="bilstm_sa"), learning_rate)
