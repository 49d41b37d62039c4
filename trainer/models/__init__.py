"""Keras model builders (design §2, §7): autoencoders, ResNet-50, Bi-LSTM + self-attention
and the baselines. Export to ONNX lives in :mod:`trainer.export`."""
from trainer.models.autoencoders import build_dense_autoencoder
from trainer.models.baselines import build_bilstm, build_cnn
from trainer.models.bilstm_sa import build_bilstm_sa
from trainer.models.resnet import (
    FEATURE_DIM,
    RESNET50_NOTOP_PARAMS,
    WeightsMismatchError,
    build_resnet50,
    load_backbone_weights,
)

__all__ = [
    "FEATURE_DIM", "RESNET50_NOTOP_PARAMS", "WeightsMismatchError", "build_bilstm", "build_bilstm_sa", "build_cnn",
    "build_dense_autoencoder", "build_resnet50", "load_backbone_weights",
]
