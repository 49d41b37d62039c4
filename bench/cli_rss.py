"""Peak memory of `emotion-av predict` against the number of files in the batch.

For each N, a folder of N files (half real-face clips: the CREMA-D clips, copied under new
names; half broken: random bytes, a truncated mp4, text) is predicted in a fresh process,
and the kernel's high-water mark of that process's resident memory (`ru_maxrss` from
wait4: the largest of the CLI process and its reaped ffmpeg children) is read when it
exits. Flat in N means the batch keeps nothing per file. Prints a markdown table.

    .venv/bin/python bench/cli_rss.py                         # N = 25, 50, 100, 200; --workers 2
    .venv/bin/python bench/cli_rss.py --sizes 10,400 --workers 1
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def broken_files(work: Path) -> list[Path]:
    rnd = random.Random(7)
    noise = work / "noise.mp4"
    noise.write_bytes(rnd.randbytes(16384))
    text = work / "text.mp4"
    text.write_bytes(b"not a video\n" * 100)
    full = work / "full.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=320x240:d=2",
                    "-c:v", "libx264", str(full)], check=True)
    cut = work / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # moov at the end: undecodable
    return [noise, text, cut]


def make_folder(root: Path, n: int, valid: list[Path], broken: list[Path]) -> Path:
    folder = root / f"n{n}"
    folder.mkdir()
    for i in range(n):
        src = valid[(i // 2) % len(valid)] if i % 2 == 0 else broken[(i // 2) % len(broken)]
        os.link(src, folder / f"{i:04d}{src.suffix}") if src.stat().st_dev == folder.stat().st_dev \
            else shutil.copyfile(src, folder / f"{i:04d}{src.suffix}")
    return folder


def run(folder: Path, out: Path, args) -> dict:
    cmd = [sys.executable, "-m", "service.run.cli", "predict", str(folder), "--out", str(out), "--quiet",
           "--workers", str(args.workers)]
    if args.model_dir:
        cmd += ["--model-dir", args.model_dir]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"emotion-av predict failed ({proc.returncode}):\n{err[-3000:]}")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return {"files": len(lines), "ok": sum(r["status"] == 200 for r in lines), "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="25,50,100,200")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-dir")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "cli_rss.json"))
    args = parser.parse_args()
    valid = sorted((Path(args.data) / "cremad_av").glob("*.flv"))
    if not valid:
        raise SystemExit(f"no CREMA-D clips under {args.data}/cremad_av")
    results = []
    with tempfile.TemporaryDirectory(prefix="cli-rss-") as tmp:
        root = Path(tmp)
        broken = broken_files(root)
        for n in [int(s) for s in args.sizes.split(",")]:
            folder = make_folder(root, n, valid, broken)
            r = run(folder, root / f"n{n}.jsonl", args)
            r["n"] = n
            results.append(r)
            print(f"N={n}: {r}", file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"workers": args.workers, "results": results}, indent=2))
    print("| files (half broken) | answered | wall s | CPU s | peak RSS (MB) |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['n']} | {r['ok']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
