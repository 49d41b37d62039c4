"""The face expert: the face ResNet's data, recipe and resumable training, the face detector
(BlazeFace, converted to ONNX), video-like variants of face stills and the `fer` peer."""
