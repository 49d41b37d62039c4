"""Stage `cross_corpus`: the voice across corpora and framings, for the report's headline
(trainer/voice/cross_corpus.py). Each recipe named in `cross_corpus_variants` (the plain
head as it was before augmentation, and the build's own) is retrained on actors 1-16 and
scored on held-out actors 17-20 as recorded and re-framed, on TESS when trained without it,
on the CREMA-D clips and on URDU (evaluation only: never trained or fitted on)."""
from __future__ import annotations

from dataclasses import dataclass

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
