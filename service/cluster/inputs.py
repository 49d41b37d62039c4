"""The inputs of a batch: local files, folders (searched recursively by extension, as
`emotion-av predict` does), glob patterns, and URIs of any filesystem fsspec reads
(`s3://bucket/prefix/`, `gs://...`, `s3://bucket/**/*.mp4`). Lazily, in sorted order per
argument, each input once."""
from __future__ import annotations

import glob
import os
from typing import Any, Iterable, Iterator

from service.run.records import UsageError, walk

_GLOB = ("*", "?", "[")


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _remote(given: str, exts: set[str], storage_options: dict[str, Any]) -> Iterator[str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(given, **storage_options)
    if any(c in path for c in _GLOB):
        found = sorted(p for p in fs.glob(path) if not fs.isdir(p))
        if not found:
            raise UsageError(f"no file matches {given}")
    elif fs.isdir(path):
        found = sorted(p for p in fs.find(path) if os.path.splitext(p)[1].lower() in exts)
    elif fs.exists(path):
        found = [path]
    else:
        raise UsageError(f"not found: {given}")
    for p in found:
        yield fs.unstrip_protocol(p)


def expand(inputs: Iterable[str], extensions: Iterable[str],
           storage_options: dict[str, Any] | None = None) -> Iterator[str]:
    """Absolute local paths and full URIs. A missing input, or a pattern matching nothing, is
    a usage error (raised when the listing reaches it)."""
    extensions = list(extensions)
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    for given in inputs:
        if is_uri(given):
            yield from _remote(given, exts, storage_options or {})
            continue
        given = given.removeprefix("file://")
        if any(c in given for c in _GLOB):
            found = sorted(glob.glob(given, recursive=True))
            if not found:
                raise UsageError(f"no file matches {given}")
            yield from walk(found, extensions)
        elif os.path.exists(given):
            yield from walk([given], extensions)
        else:
            raise UsageError(f"not found: {given}")
