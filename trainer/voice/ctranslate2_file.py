"""A reader of CTranslate2's `model.bin` (binary format version 6), enough to take the
Whisper encoder's weights out of it without the `ctranslate2` package.

The file is a flat list of named tensors, as `ctranslate2/specs/model_spec.py` writes it:

    uint32 binary version | string spec name | uint32 spec revision | uint32 n
    n x (string name | uint8 rank | rank x uint32 dim | uint8 dtype | uint32 n_bytes | bytes)
    uint32 n_aliases | n_aliases x (string alias | string name)

strings are a uint16 length (counting a trailing NUL) and the UTF-8 bytes; all little-endian.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SUPPORTED_VERSIONS = (5, 6)
# ctranslate2's DataType enum, in its order.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class CT2FormatError(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        try:
            (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error as exc:
            raise CT2FormatError("the file ends inside its header or a tensor") from exc
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("H")
        raw = self.data[self.pos:self.pos + n]
        if len(raw) != n or n == 0 or raw[-1] != 0:
            raise CT2FormatError("malformed string")
        self.pos += n
        return raw[:-1].decode("utf-8")

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        if len(out) != n:
            raise CT2FormatError("the file ends inside a tensor")
        self.pos += n
        return out


def read_model(path: str | Path, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {tensor name: array}) of a CTranslate2 model file; with `prefix`, only the
    tensors whose name starts with it (e.g. "encoder/")."""
    r = _Reader(Path(path).read_bytes())
    version = r.take("I")
    if version not in SUPPORTED_VERSIONS:
        raise CT2FormatError(f"CTranslate2 binary version {version} is not supported ({SUPPORTED_VERSIONS})")
    spec = r.string()
    r.take("I")  # spec revision
    tensors: dict[str, np.ndarray] = {}
    for _ in range(r.take("I")):
        name = r.string()
        dims = [r.take("I") for _ in range(r.take("B"))]
        dtype_id = r.take("B")
        if dtype_id not in _DTYPES:
            raise CT2FormatError(f"tensor {name}: unsupported dtype id {dtype_id}")
        data = r.raw(r.take("I"))
        if name.startswith(prefix):
            arr = np.frombuffer(data, dtype=_DTYPES[dtype_id])
            if arr.size != int(np.prod(dims, dtype=np.int64)):
                raise CT2FormatError(f"tensor {name}: {arr.size} values for dims {dims}")
            tensors[name] = arr.reshape(dims)
    return spec, tensors
