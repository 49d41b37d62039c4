"""The plots of docs/benchmarks.md, drawn from the figures that page reports (runs H, I and J of
`bench/bench.py`; each number below is in its text), so that the picture and the tables agree.
Re-run after a new benchmark run, with the new medians:

    .venv/bin/pip install matplotlib==3.11.2     # the version the train extra pins
    .venv/bin/python bench/docs_plots.py         # writes docs/img/bench-latency.png
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "bench-latency.png"

# Median ms per request: the ffmpeg CLI decode (floor), the service before the decoder pool
# (c04cbcc), the service with it, and the `fer` peer (not run in J). The ratios drawn are of
# these rounded medians, so they may differ from the reported ones in the last digit.
RUNS = {
    "CREMA-D 480x360, 2.2 s": {"H": (88, 131, 85, 914), "I": (123, 182, 135, 1154), "J": (121, 185, 108, None)},
    "720p H.264, 4 s": {"H": (179, 219, 154, 3932), "I": (243, 365, 216, 4836), "J": (252, 311, 208, None)},
}
SERIES = ("before the decoder pool", "now", "fer (per frame)")


def main() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    width = 0.26
    for ax, (clip, runs) in zip(axes, RUNS.items()):
        for k, name in enumerate(SERIES):
            xs, ys = [], []
            for i, (floor, *medians) in enumerate(runs.values()):
                if medians[k] is not None:
                    xs.append(i + (k - 1) * width)
                    ys.append(medians[k] / floor)
            bars = ax.bar(xs, ys, width, label=name)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(runs)), [f"run {r}" for r in runs])
        ax.set_yscale("log")
        ax.set_ylim(0.7, 40)
        ax.set_title(clip)
    axes[0].set_ylabel("median answer time / ffmpeg decode time")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("POST /predict against the cost of decoding the clip (dashed: 1.0), 2-core CPU")
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(OUT)


if __name__ == "__main__":
    main()
