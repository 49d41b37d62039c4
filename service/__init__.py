"""Emotion recognition service: FastAPI + ONNX Runtime over a model bundle."""

__version__ = "0.1.0"
