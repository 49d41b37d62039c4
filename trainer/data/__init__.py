"""Corpus loaders (design §3): every corpus becomes a list of `Sample`s labelled in basic7."""
from trainer.data.cremad import load_cremad
from trainer.data.discover import LOADERS, discover_corpora, load_corpus
from trainer.data.images import load_ckplus, load_fer2013, load_rafdb
from trainer.data.labels import BASIC7, LABEL_SETS, PAPER3, label_from_word, map_label
from trainer.data.ravdess import load_ravdess
from trainer.data.sample import Sample, filter_label_set
from trainer.data.savee import load_savee
from trainer.data.tess import load_tess
from trainer.data.urdu import load_urdu

# Corpora that are never trained on, only evaluated on (design §3: URDU, another language and
# real talk-show speech): trainer.stages.data.load_samples leaves them out whatever is asked.
EVALUATION_ONLY = frozenset({"urdu"})
# Each corpus's licence as its publishers state it (../shared/data/README.md), for the model card.
LICENCES = {
    "ravdess": "CC BY-NC-SA 4.0 (Livingstone & Russo 2018)",
    "tess": "as published by the University of Toronto (research use)",
    "cremad": "ODbL 1.0 / DbCL 1.0",
    "savee": "research use (University of Surrey)",
    "fer2013": "research use (ICML 2013 challenge)",
    "ckplus": "research use (CK+ agreement)",
    "rafdb": "non-commercial research, by the authors' terms (Li et al. 2017)",
    "urdu": "research use only, as its authors state (Latif et al. 2018)",
}

__all__ = [
    "BASIC7", "PAPER3", "LABEL_SETS", "map_label", "label_from_word", "Sample", "filter_label_set",
    "load_ravdess", "load_tess", "load_cremad", "load_savee", "load_fer2013", "load_ckplus", "load_rafdb",
    "load_urdu", "EVALUATION_ONLY", "LICENCES",
    "LOADERS", "discover_corpora", "load_corpus",
]
