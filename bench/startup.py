"""Cold and warm start of `python -m service`: fresh processes, median of N each.

    .venv/bin/python bench/startup.py [--runs 3] [--model-dir models/default]

For each start: seconds from spawn until /readyz first answers at all (503 while the bundle
loads: the server accepts connections at once) and until it answers 200 (bundle loaded,
verified and warmed up). Three kinds, each with an empty NUMBA_CACHE_DIR except *warm*:

- *fresh install*: the bytecode a fresh `scripts/install.sh` leaves: the standard library's and
  every dependency's (pip compiles what it installs), this project's own modules (an editable
  install: never compiled by pip) from source on every start (PYTHONDONTWRITEBYTECODE=1).
- *cold*: no bytecode at all: every module, the standard library included, compiled from
  source into a new empty PYTHONPYCACHEPREFIX. Harsher than any real install.
- *warm*: the same PYTHONPYCACHEPREFIX and NUMBA_CACHE_DIR, filled by an earlier start.

The operating system's file cache cannot be emptied without root; it is warm after the first run.
Targets: 503 within 2 s of launch, 200 within 10 s, from a fresh install.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from server import REPO, Service

KINDS = ("fresh install", "cold", "warm")


def one_start(model_dir: Path | None, cache: Path, kind: str, env: dict[str, str] | None = None) -> dict:
    env = {**(env or {}), "NUMBA_CACHE_DIR": str(cache / "numba")}
    if kind == "fresh install":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:  # an empty value unsets it (a caller's environment may set it): the warm cache must fill
        env.update(PYTHONPYCACHEPREFIX=str(cache / "pycache"), PYTHONDONTWRITEBYTECODE="")
    with Service(model_dir, env) as svc:
        answered = svc.wait_listening(timeout=60)
        ready = svc.wait_ready(timeout=180, interval=0.02)
        cpu = svc.ps.cpu_times()
    # CPU seconds the process spent until ready: unlike wall time, barely changed by other
    # work on a shared machine (wall ~ CPU s when the machine is idle; less with 2 threads).
    return {"answer_s": round(answered, 3), "ready_s": round(ready, 3), "cpu_s": round(cpu.user + cpu.system, 2),
            "load_avg_1m": os.getloadavg()[0]}


def measure_startup(model_dir: Path | None, runs: int = 3, env: dict[str, str] | None = None, log=print) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        warm_cache = Path(tmp) / "warm"
        one_start(model_dir, warm_cache, "warm", env)  # fills the warm cache
        for kind in KINDS:
            starts = []
            for i in range(runs):
                cache = warm_cache if kind == "warm" else Path(tmp) / f"{kind.replace(' ', '-')}-{i}"
                starts.append(one_start(model_dir, cache, kind, env))
                log(f"[start] {kind} {i + 1}/{runs}: answers after {starts[-1]['answer_s']:.2f} s, "
                    f"ready after {starts[-1]['ready_s']:.2f} s, {starts[-1]['cpu_s']:.1f} CPU s "
                    f"(load average {starts[-1]['load_avg_1m']:.1f})")
            out[kind] = {"runs": starts,
                         "answer_s_median": statistics.median(s["answer_s"] for s in starts),
                         "ready_s_median": statistics.median(s["ready_s"] for s in starts),
                         "cpu_s_median": statistics.median(s["cpu_s"] for s in starts)}
    out["load_avg"] = os.getloadavg()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model-dir", default=str(REPO / "models" / "default"))
    args = ap.parse_args(argv)
    res = measure_startup(Path(args.model_dir), args.runs, log=lambda m: print(m, file=sys.stderr))
    for kind in KINDS:
        r = res[kind]
        print(f"{kind}: /readyz answers (503) after {r['answer_s_median']:.2f} s, 200 after "
              f"{r['ready_s_median']:.2f} s, {r['cpu_s_median']:.1f} CPU s (median of {len(r['runs'])} fresh processes)")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
