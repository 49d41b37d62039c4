"""The build's stage runner: outputs kept in the build cache and reloaded by `--from`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from service.pipeline.config import PipelineConfig
from trainer.cache import FeatureCache
from trainer.export import ExportResult
from trainer.recipe import BuildOptions, Recipe
from trainer.stages import STAGES, BuildContext, load_output, run_stage, save_output, stage_output


@stage_output
@dataclass
class _Out:
    export: ExportResult
    arrays: dict[str, dict[str, np.ndarray]]
    mask: np.ndarray
    info: dict


def _ctx(tmp_path: Path, from_stage: str | None = None) -> BuildContext:
    staging = tmp_path / f"staging-{from_stage}"
    staging.mkdir()
    opts = BuildOptions(data_dir=tmp_path, out_dir=tmp_path / "bundle", recipe=Recipe.for_profile("quick"),
                        cache_dir=tmp_path / "cache" / "features", from_stage=from_stage)
    return BuildContext(opts, PipelineConfig(), ["a", "b"], FeatureCache(None), staging, 0.0)


def _output(staging: Path) -> _Out:
    onnx = staging / "thing.onnx"
    onnx.write_bytes(b"not really onnx")
    export = ExportResult(onnx, "abc", "x", "y", [None, 3], [None, 2], 1e-7, False)
    return _Out(export, {"train": {"X": np.arange(6.0).reshape(2, 3), "view": np.array(["fused", "audio"])}},
                np.array([1, 4, 9]), {"n": 3, "curve": [{"epoch": 1}]})


def test_stage_output_round_trips(tmp_path):
    out = _output(tmp_path)
    save_output(tmp_path / "store", out)
    (tmp_path / "new").mkdir()
    back = load_output(tmp_path / "store", tmp_path / "new")
    assert back.export.path == tmp_path / "new" / "thing.onnx" and back.export.path.read_bytes() == b"not really onnx"
    assert back.export.input_shape == [None, 3] and back.info == out.info
    np.testing.assert_array_equal(back.arrays["train"]["X"], out.arrays["train"]["X"])
    assert back.arrays["train"]["view"].tolist() == ["fused", "audio"] and back.mask.tolist() == [1, 4, 9]


def test_from_stage_reuses_earlier_outputs_and_reruns_later_ones(tmp_path):
    calls = []

    def stage(ctx, tag):
        calls.append(tag)
        return _output(ctx.staging)

    full = _ctx(tmp_path)
    run_stage(full, "face_backbone", stage, "backbone")
    run_stage(full, "classifiers", stage, "classifiers")
    assert calls == ["backbone", "classifiers"]
    later = _ctx(tmp_path, from_stage="classifiers")
    reused = run_stage(later, "face_backbone", stage, "backbone")       # from the cache: not called
    run_stage(later, "classifiers", stage, "classifiers")
    assert calls == ["backbone", "classifiers", "classifiers"]
    assert reused.export.path.parent == later.staging and reused.export.path.is_file()


def test_from_stage_without_a_previous_build_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="run a full build first"):
        run_stage(_ctx(tmp_path, from_stage="publish"), "pairs", lambda ctx: None)
    assert STAGES[0] == "data" and STAGES[-1] == "publish"
