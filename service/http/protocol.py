"""uvicorn's HTTP/1.1 protocol (h11) with the service's JSON error body for requests it
refuses before the application sees them (a header with control characters, a header block
over h11's limit, a broken request line): `{"error": {"code": "bad_request", ...}}` instead
of uvicorn's plain-text 400, so that every answer of the service is the documented JSON."""
from __future__ import annotations

import json
import uuid

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        rid = uuid.uuid4().hex
        body = json.dumps({"error": {"code": "bad_request", "message": "the HTTP request could not be parsed",
                                     "request_id": rid}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", rid.encode()), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
