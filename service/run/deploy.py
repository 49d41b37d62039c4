"""What the container images need around the app: the numba cache seed and the build check.

`python -m service --check` runs the app's real start-up (load + verify the bundle, warm-up)
without a socket, prints the /readyz and /v1/models answers (one JSON line, last) and exits
non-zero unless the service would turn ready. The images run it at build time, so a broken image fails to build,
and with NUMBA_CACHE_DIR pointing into the image it leaves librosa's compiled kernels there.

`seed_numba_cache` copies a baked numba cache into the writable NUMBA_CACHE_DIR (a tmpfs) at
start. It dates from when librosa's MFCC (numba-compiled, ≈15 s cold) was on the serving
path; the service now computes its features with numpy/scipy, so there is nothing to compile
and, in a newly built image, nothing to copy.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("service.run.deploy")


def seed_numba_cache(seed: Path | None, target: str | os.PathLike | None = None) -> int:
    """Copy the files of `seed` missing from `target` (default: $NUMBA_CACHE_DIR), keeping
    their timestamps. Returns how many were copied; never fails the start-up."""
    target = target or os.environ.get("NUMBA_CACHE_DIR")
    if not seed or not target:
        return 0
    seed, target = Path(seed), Path(target)
    if not seed.is_dir():
        # The serving path no longer compiles numba kernels (service/pipeline/audio.py), so an
        # image built now leaves no cache to seed: nothing is lost.
        log.debug("numba cache seed %s is not a directory: nothing to copy", seed)
        return 0
    if seed.resolve() == target.resolve():
        return 0
    copied = 0
    try:
        for src in seed.rglob("*"):
            dst = target / src.relative_to(seed)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            elif not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                copied += 1
    except OSError as exc:
        log.warning("could not seed the numba cache %s from %s (%s): kernels will be compiled", target, seed, exc)
    return copied


async def _asgi_get(app, path: str) -> tuple[int, Any]:
    """One GET through the ASGI app, no socket (the service's dependencies have no client)."""
    status, body = 0, bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"localhost")],
             "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}
    await app(scope, receive, send)
    try:
        return status, json.loads(bytes(body))
    except ValueError:
        return status, bytes(body).decode("utf-8", "replace")


async def _check(app) -> dict[str, Any]:
    async with app.router.lifespan_context(app):
        await app.state.model.wait()  # the bundle loads in the background
        ready_status, ready = await _asgi_get(app, "/readyz")
        models_status, models = await _asgi_get(app, "/v1/models")
    return {"ready": ready_status == 200 and models_status == 200, "readyz": ready, "models": models}


def check(settings) -> dict[str, Any]:
    """Start the app as the server would (bundle load, verification, warm-up, the decoder
    workers), query it, stop."""
    from service.http.app import create_app

    return asyncio.run(_check(create_app(settings)))
