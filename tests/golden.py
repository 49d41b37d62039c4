"""Golden probabilities of the shipped bundle on the six real CREMA-D clips.

A refactor must not change what the shipped bundle answers: the test compares
`predict_file` on these clips with the figures recorded here, to 1e-6. A new bundle
changes them on purpose; record its figures with

    python -m tests.golden        # writes tests/golden/shipped_cremad.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = REPO_ROOT / "tests" / "golden" / "shipped_cremad.json"
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"


def compute(bundle_dir: Path, clips_dir: Path) -> dict:
    from service.model.bundle import load_bundle
    from service.model.predictor import predict_file
    from service.pipeline.config import MediaLimits

    bundle = load_bundle(bundle_dir, providers=["CPUExecutionProvider"], threads=1)
    out = {"manifest_sha256": bundle.manifest_sha256, "clips": {}}
    for clip in sorted(clips_dir.glob("*.flv")):
        result = predict_file(bundle, clip, MediaLimits())
        out["clips"][clip.name] = {"label": result["label"], "probabilities": result["probabilities"]}
    return out


if __name__ == "__main__":
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT.parent / "shared" / "data"
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(compute(DEFAULT_BUNDLE, data_dir / "cremad_av"), indent=2) + "\n")
    print(f"wrote {GOLDEN}")
