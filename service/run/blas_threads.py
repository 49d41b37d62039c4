"""One OpenMP / OpenBLAS thread per request, for the server and the CLI alike.

Requests (and the CLI's files) run in parallel on worker threads, and pools of idle BLAS
threads spin-waiting between a clip's small calls (k-means, mel matrices) cost a short clip
~40 ms of wall time (bench/README.md, run G); docker-compose.yml sets the same for the images.
It also keeps the numbers the same in both: OpenBLAS's threaded sgemm rounds the mel matrix
product differently on some CPUs (1e-7 on the probabilities), and the CLI promises the
answers of POST /predict. Must run before anything loads numpy; an explicit setting wins.
Standard library only, so importing it loads nothing."""
from __future__ import annotations

import os

BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def one_blas_thread() -> None:
    for var in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(var, "1")
