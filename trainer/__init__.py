"""Emotion trainer: corpora -> features (through the service's pipeline) -> Keras models -> ONNX bundle."""

__version__ = "0.1.0"
