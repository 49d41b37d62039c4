"""Receive the multipart `file` field straight to a temp file, enforcing the size limit
while streaming (never buffering the body in memory)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from service.http.errors import ApiError
from service.http.spool import NO_SPACE, spool_full
from service.pipeline.budget import CLIENT_GONE

FIELD = "file"


@dataclass
class Upload:
    path: Path
    filename: str
    size: int


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "upload_too_large", f"the upload exceeds the limit of {limit / 2**20:.0f} MiB")


def _malformed(message: str = "the multipart body could not be parsed") -> ApiError:
    return ApiError(400, "malformed_multipart", message)


class _Receiver:
    """Callbacks for python-multipart's streaming parser: only the `file` part is written."""

    def __init__(self, dest: Path, limit: int):
        self.dest, self.limit = dest, limit
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.files: list[Upload] = []
        self.other_fields: list[str] = []
        self.out = None
        self.size = 0

    def on_part_begin(self) -> None:
        self.disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.disposition)
        name = params.get(b"name", b"").decode("latin-1")
        if name == FIELD and b"filename" in params and not self.files:
            filename = params[b"filename"].decode("utf-8", "replace")
            self.files.append(Upload(self.dest, filename, 0))
            self.out = open(self.dest, "wb")
        elif name == FIELD and self.files:
            self.other_fields.append(f"{FIELD} (more than one)")
        else:
            self.other_fields.append(name or "<unnamed>")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.out is not None:
            self.size += end - start
            if self.size > self.limit:
                raise _too_large(self.limit)
            self.out.write(data[start:end])

    def on_part_end(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
            self.files[0].size = self.size

    def close(self) -> None:
        """Close a file left open by an error (its directory is removed by the caller); a
        failing flush of a file being abandoned is of no interest."""
        if self.out is not None:
            out, self.out = self.out, None
            try:
                out.close()
            except OSError:
                pass


async def receive_upload(request: Request, dest: Path, limit: int) -> Upload:
    """The `file` part of a multipart body, written to `dest`. Every way the envelope can be
    malformed (content type, boundary, part headers, truncation) is a 4xx: python-multipart
    refuses some boundaries when the parser is constructed, so that too is inside the `try`."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(415, "not_multipart", f"send the video as multipart/form-data in the field '{FIELD}'")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _too_large(limit)
    recv = _Receiver(dest, limit)
    callbacks = {k: getattr(recv, k) for k in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
        "on_headers_finished", "on_part_data", "on_part_end")}
    # Headers and other fields are small: the body may exceed the file limit only by that.
    body_limit = limit + 64 * 1024
    received = 0
    try:
        # RFC 2046: 1-70 characters; python-multipart accepts up to 256 and raises on more.
        parser = MultipartParser(boundary, callbacks)
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise _too_large(limit)
            parser.write(chunk)
        parser.finalize()
        if recv.out is not None:  # the body ended inside the file part
            raise _malformed("the multipart body ended before the file did")
    except (FormParserError, ValueError) as exc:
        raise _malformed() from exc
    except ClientDisconnect:
        # Nobody reads the answer; the log and the metrics say what happened (not a 500).
        raise ApiError(CLIENT_GONE, "client_closed", "the client went away during the upload") from None
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise spool_full() from exc
        raise
    finally:
        recv.close()
    if recv.other_fields:
        raise ApiError(422, "unexpected_fields",
                       f"only one field '{FIELD}' holding one file is accepted; got also: {', '.join(recv.other_fields)}")
    if not recv.files:
        raise ApiError(422, "missing_file", f"no file in the multipart field '{FIELD}'")
    upload = recv.files[0]
    if upload.size == 0:
        raise ApiError(400, "empty_file", "the uploaded file is empty")
    return upload
