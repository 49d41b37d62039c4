"""Stage `cross_corpus`: the voice across corpora and framings, for the report's headline
(trainer/voice/cross_corpus.py). Each recipe named in `cross_corpus_variants` (the plain
head as it was before augmentation, and the build's own) is retrained on actors 1-16 and
scored on held-out actors 17-20 as recorded and re-framed, on TESS when trained without it,
on the CREMA-D clips and on URDU (evaluation only: never trained or fitted on)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.model.manifest import Manifest
from trainer.stages import BuildContext, log, stage_output
from trainer.voice.cross_corpus import study_rows


@stage_output
@dataclass
class CrossCorpus:
    rows: list[dict]          # one per variant: trainer.voice.cross_corpus.Study.run's figures


def cross_corpus(ctx: BuildContext) -> CrossCorpus:
    variants = ctx.recipe.cross_corpus_variants
    if not variants:
        return CrossCorpus([])
    rows = study_rows(ctx.opts.data_dir, ctx.cache, "test", ctx.cfg, variants)
    for r in rows:
        log.info("cross-corpus %s: in-corpus %.3f, framings %s, urdu %.3f", r["variant"], r["in-corpus"]["accuracy"],
                 " ".join(f"{v['accuracy']:.3f}" for k, v in r.items() if k.startswith("framing")),
                 r.get("urdu", {}).get("accuracy", float("nan")))
    return CrossCorpus(rows)


def with_cross_corpus(manifest: Manifest, study: CrossCorpus) -> Manifest:
    if not study.rows:
        return manifest
    return manifest.model_copy(update={"metrics": {**manifest.metrics, "cross_corpus": study.rows}})


def main(argv: list[str] | None = None) -> None:
    """`python -m trainer.stages.cross_corpus --bundle DIR`: add (or redo) the cross-corpus table
    of a bundle already built, with its own preprocessing, as the build's last stage would."""
    import argparse
    import json
    import logging

    from trainer.cache import FeatureCache
    from trainer.paths import CACHE_DIR, DATA_DIR, REPO_ROOT
    from trainer.recipe import Recipe
    from trainer.report.writer import write_report
    from service.pipeline.config import PipelineConfig

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--bundle", type=Path, default=REPO_ROOT / "models" / "default")
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--cache", type=Path, default=CACHE_DIR / "features")
    p.add_argument("--variants", default=",".join(Recipe.for_profile("default").cross_corpus_variants))
    p.add_argument("--rows", type=Path, help="rows computed earlier by `--save` with the same preprocessing")
    p.add_argument("--save", type=Path, help="also write the rows (with the preprocessing they were computed with)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    manifest, _ = Manifest.read(args.bundle)
    cfg = PipelineConfig.from_dict(manifest.preprocessing)
    if args.rows:
        saved = json.loads(args.rows.read_text())
        if saved["preprocessing"] != cfg.to_dict():
            raise SystemExit(f"{args.rows} was computed with other preprocessing than {args.bundle}'s")
        rows = saved["rows"]
    else:
        rows = study_rows(args.data, FeatureCache(args.cache), "test", cfg, args.variants.split(","))
    if args.save:
        args.save.write_text(json.dumps({"preprocessing": cfg.to_dict(), "rows": rows}, indent=1))
    updated = with_cross_corpus(manifest, CrossCorpus(rows))
    updated.write(args.bundle)
    write_report(args.bundle, updated)
    log.info("%s: cross-corpus table of %s written", args.bundle, args.variants)


if __name__ == "__main__":
    main()
