"""The face expert beside its teachers and their pools, per corpus (issue 40):
trainer/face/corpus_table.py's table, accuracy / UAR, written to bench/results/face_teachers.json.

    .venv/bin/python bench/face_teachers.py                        # the served expert (ffce5c27b30aa751)
    .venv/bin/python bench/face_teachers.py --student KEY_OR_FILE  # and a distilled student beside it

* = the zoo model was trained on these faces (RAF-DB's official train split, from which the
project's RAF-DB carves are cut); pool weights are chosen on FER2013's validation carve only.
`fer` (not here) was trained on FER2013 train; face-api's training data is not documented.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", action="append", default=[], help="a committed checkpoint key or a state.npz")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=REPO / ".cache")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "face_teachers.json")
    args = p.parse_args(argv)

    from service.pipeline.config import PipelineConfig
    from trainer.cache import FeatureCache
    from trainer.face.backbone import COMMITTED, face_samples
    from trainer.face.corpus_table import corpus_table, markdown
    from trainer.face.distill import SERVED

    def file(ref: str) -> Path:
        return Path(ref) if "/" in ref else COMMITTED / f"{ref}.npz"

    models = {"expert (served)": file(SERVED),
              **{f"student {Path(s).parent.name if '/' in s else s}": file(s) for s in args.student}}
    load = os.getloadavg()[0]
    table = corpus_table(face_samples(args.data), PipelineConfig(image_size=48), FeatureCache(args.cache / "features"),
                         models, args.data, args.cache)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average": load, **table}, indent=1))
    print("Accuracy / UAR, flip-averaged (the zoo model once a face). * = the zoo model trained on these faces "
          "(RAF-DB's official train split); pool weights chosen on FER2013's validation carve.\n")
    print(markdown(table))


if __name__ == "__main__":
    main()
