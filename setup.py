"""Packaging that pyproject.toml cannot say: the shipped bundle, `models/default`, travels in
the wheel as the package `emotion_av_models` (package data), so that `pip install .` (not
editable) serves from any folder (service.settings.default_model_dir finds it there). Only
what loading needs is packed: the ONNX artifacts, manifest.json, metrics.json, report.md (no
figures). A build without the bundle (the Docker build stage copies it beside the virtualenv
instead) packs the code alone."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
bundled = (HERE / "models" / "default" / "manifest.json").is_file()
setup(
    packages=find_packages(include=["service*", "trainer*"]) + (["emotion_av_models"] if bundled else []),
    package_dir={"emotion_av_models": "models"} if bundled else {},
    package_data={"service.http": ["static/*"],
                  **({"emotion_av_models": ["default/*.onnx", "default/*.json", "default/report.md"]}
                     if bundled else {})},
    include_package_data=False,
)
