"""Feature selection for the fusion features (DESIGN §2 step 6, §9): IZOA / ZOA wrapper
search, a mutual-information filter baseline, and the wrapper fitness they share."""
from trainer.select.feature_selection import (
    METHODS,
    POSITION_BOUNDS,
    SelectionResult,
    position_to_bits,
    select_features,
    transfer_s,
    transfer_v,
)
from trainer.select.fitness import SubsetFitness
from trainer.select.zoa import ZOAResult, levy_step, mantegna_sigma, zoa_minimize

__all__ = [
    "METHODS",
    "POSITION_BOUNDS",
    "SelectionResult",
    "SubsetFitness",
    "ZOAResult",
    "levy_step",
    "mantegna_sigma",
    "position_to_bits",
    "select_features",
    "transfer_s",
    "transfer_v",
    "zoa_minimize",
]
