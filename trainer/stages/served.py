"""Stage `served_calibration`: the temperatures and late-fusion weights refitted on
validation clips through the serving path, and the test clips scored before and after
(trainer/fusion/served_calibration.py). It runs on the staged bundle, just before `publish`."""
from __future__ import annotations

import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.model.manifest import Manifest
from trainer.fusion.served_calibration import calibrate_through_service
from trainer.stages import BuildContext, stage_output


@stage_output
@dataclass
class ServedCalibration:
    calibration: dict[str, Any] = field(default_factory=dict)  # empty: the step is off (the pseudo-pair fit stays)
    fusion: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    real_av_clips: list[dict[str, Any]] = field(default_factory=list)  # the CREMA-D clips' served answers


def served_calibration(ctx: BuildContext, manifest: Manifest) -> ServedCalibration:
    per_class, draws = ctx.recipe.served_clips_per_class, ctx.recipe.served_val_draws
    if per_class == 0:
        return ServedCalibration()
    manifest.write(ctx.staging)
    # The clips are cached beside the feature cache, as the build cache is; without one, made afresh.
    where = (nullcontext(ctx.opts.cache_dir.parent / "served_clips") if ctx.opts.cache_dir is not None
             else tempfile.TemporaryDirectory(prefix="served-clips-"))
    with where as cache:
        return ServedCalibration(**calibrate_through_service(ctx.staging, ctx.opts.data_dir, Path(cache), per_class,
                                                             draws, choose_fusion=ctx.recipe.fusion == "auto"))
