"""A deliberately dumb HTTP/1.1 client over a raw socket: sends exactly the bytes it is given
(headers with control characters, lying lengths, bodies cut short), which httpx and h11
would refuse to produce, and reads one response."""
from __future__ import annotations

import json
import socket
import struct
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int                      # 0: the connection closed without a response
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0

    def json(self) -> dict:
        return json.loads(self.body)


def request_bytes(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes,
                  content_length: int | None = None) -> bytes:
    """A request with the headers as given, plus Content-Length (the body's, unless given)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
    for k, v in headers:
        head += k + b": " + v + b"\r\n"
    n = len(body) if content_length is None else content_length
    return head + f"Content-Length: {n}\r\n\r\n".encode() + body


def _parse(raw: bytes, seconds: float) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Answer(0, {}, raw, seconds)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return Answer(status, headers, body, seconds)


def exchange(port: int, data: bytes, timeout: float = 30.0, close_after_send: bool = False) -> Answer:
    """Send `data`, read the response until its Content-Length (or the close). With
    `close_after_send`, hang up at once instead (a client that disconnects mid-request)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (and closed) before reading everything: the answer is still there
        if close_after_send:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
            return Answer(0, seconds=time.monotonic() - start)
        raw = b""
        deadline = start + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                break
            if not chunk:
                break
            raw += chunk
            while raw.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in raw:  # 100 Continue: not the answer
                raw = raw.partition(b"\r\n\r\n")[2]
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length" and len(body) >= int(v.strip() or 0):
                        return _parse(raw, time.monotonic() - start)
    return _parse(raw, time.monotonic() - start)
