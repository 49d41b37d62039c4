"""`trainer build` as named stages, each a function with typed inputs and outputs:

    data -> audio_features -> audio_encoder -> face_backbone -> face_detector -> face_features -> voice_encoder
         -> pairs -> audio_head -> audio_domain -> face_head -> feature_selection -> classifiers -> evaluation -> served_calibration -> publish

`run_stage` logs each stage with its duration and keeps its output in the build cache
(`<cache>/builds/<bundle name>/<stage>/`: arrays in npz, ONNX files, small values in
JSON), so `trainer build --from classifiers` re-runs the classifiers and what follows from
the outputs of the last build, without retraining the face backbone. Stages that are cheap
with the feature cache warm (data, audio features) always run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from service.pipeline.config import PipelineConfig
from trainer.cache import FeatureCache
from trainer.export import ExportResult
from trainer.recipe import BuildOptions, Recipe

log = logging.getLogger("trainer")
SPLITS = ("train", "val", "test")
STAGES = ("data", "audio_features", "audio_encoder", "face_backbone", "face_detector", "face_features", "voice_encoder", "pairs",
          "audio_head", "audio_domain", "face_head", "feature_selection", "classifiers", "evaluation", "served_calibration",
          "cross_corpus", "publish")
ALWAYS_RUN = {"data", "audio_features", "evaluation", "publish"}
T = TypeVar("T")


@dataclass
class BuildContext:
    """What every stage may read: options, recipe, preprocessing, classes, caches, staging dir."""

    opts: BuildOptions
    cfg: PipelineConfig
    classes: list[str]
    cache: FeatureCache
    staging: Path                 # the bundle being written (renamed into place by `publish`)
    started: float

    @property
    def recipe(self) -> Recipe:
        return self.opts.recipe

    @property
    def stage_cache(self) -> Path | None:
        root = self.opts.cache_dir
        return None if root is None else root.parent / "builds" / self.opts.out_dir.name

    def rng(self, stage: str) -> np.random.Generator:
        """A generator per stage, so re-running from a stage draws exactly what a full build draws."""
        return np.random.default_rng([self.recipe.seed, STAGES.index(stage)])


def run_stage(ctx: BuildContext, name: str, fn: Callable[..., T], *args: Any) -> T:
    """Run stage `name` (or load its output from the build cache when the build starts later)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}")
    start_at = STAGES.index(ctx.opts.from_stage) if ctx.opts.from_stage else 0
    store = ctx.stage_cache / name if ctx.stage_cache else None
    if STAGES.index(name) < start_at and name not in ALWAYS_RUN:
        if store is None or not (store / "output.json").is_file():
            raise SystemExit(f"--from {ctx.opts.from_stage}: no cached output of stage {name!r} in "
                             f"{ctx.stage_cache}; run a full build first")
        log.info("⤷ %s: from the build cache", name)
        return load_output(store, ctx.staging)
    log.info("▶ %s", name)
    t0 = time.perf_counter()
    out = fn(ctx, *args)
    if store is not None and name not in ALWAYS_RUN:
        save_output(store, out)
    log.info("✓ %s (%.1f s)", name, time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- persistence
# A stage output is a dataclass whose fields are arrays, ExportResults (an ONNX file), dicts of
# those, or JSON values. Saved as output.json (structure + JSON values) + arrays.npz + files.

_REGISTRY: dict[str, type] = {}


def stage_output(cls: type[T]) -> type[T]:
    """Register a dataclass as a stage output that `save_output`/`load_output` can handle."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _encode(value: Any, arrays: dict[str, np.ndarray], files: list[Path], key: str) -> Any:
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, ExportResult):
        files.append(value.path)
        d = value.to_dict()
        d["path"] = value.path.name
        return {"__export__": d, "cls": type(value).__name__}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _REGISTRY:
        return {"__dataclass__": type(value).__name__,
                "fields": {f.name: _encode(getattr(value, f.name), arrays, files, f"{key}.{f.name}")
                           for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {"__dict__": {str(k): _encode(v, arrays, files, f"{key}.{k}") for k, v in value.items()}}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (np.ndarray, ExportResult, dict)) for v in value):
        return {"__list__": [_encode(v, arrays, files, f"{key}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any, arrays, staging: Path, store: Path) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__export__" in value:
            d = dict(value["__export__"])
            target = staging / d["path"]
            shutil.copy2(store / d["path"], target)
            d["path"] = target
            if value.get("cls") == "DetectorExport":
                from trainer.face.detector import DetectorExport

                return DetectorExport(**d)
            return ExportResult(**d)
        if "__dataclass__" in value:
            cls = _REGISTRY[value["__dataclass__"]]
            return cls(**{k: _decode(v, arrays, staging, store) for k, v in value["fields"].items()})
        if "__dict__" in value:
            return {k: _decode(v, arrays, staging, store) for k, v in value["__dict__"].items()}
        if "__list__" in value:
            return [_decode(v, arrays, staging, store) for v in value["__list__"]]
    return value


def save_output(store: Path, output: Any) -> None:
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    arrays: dict[str, np.ndarray] = {}
    files: list[Path] = []
    tree = _encode(output, arrays, files, "o")
    np.savez(store / "arrays.npz", **arrays)
    for f in files:
        shutil.copy2(f, store / f.name)
    (store / "output.json").write_text(json.dumps(tree, default=str))


def load_output(store: Path, staging: Path) -> Any:
    with np.load(store / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return _decode(json.loads((store / "output.json").read_text()), arrays, staging, store)
