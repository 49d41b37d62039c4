"""The model runtime: the bundle's typed manifest, ONNX Runtime sessions, calibration and the
predictor that runs a file through the pipeline and the bundle."""
