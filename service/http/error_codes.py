"""The one table of error codes and their HTTP statuses (design §5): every `ApiError` /
`MediaError` the service raises uses a code from it, the OpenAPI document lists them per
status on each route, and docs/http-api.md "Errors" shows the same table (tests/test_contract.py
compares all three)."""
from __future__ import annotations

from service.pipeline.budget import CLIENT_GONE

# code -> status. `cancelled` (499, the client went away) is never read by a client: it is in
# logs and metrics only, so it is not part of the documented API.
ERRORS: dict[str, int] = {
    "empty_file": 400, "undecodable": 400, "no_usable_stream": 400, "no_duration": 400, "malformed_multipart": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "upload_timeout": 408,
    "upload_too_large": 413, "too_long": 413, "resolution_too_large": 413, "too_many_frames": 413,
    "not_multipart": 415, "unsupported_container": 415, "playlist_refused": 415,
    "unexpected_fields": 422, "missing_file": 422, "invalid_parameters": 422,
    "internal_error": 500, "decoder_failed": 500, "inference_failed": 500,
    "overloaded": 503, "not_ready": 503,
    "processing_timeout": 504, "decode_timeout": 504,
    "spool_full": 507,
}
UNDOCUMENTED = {"cancelled": CLIENT_GONE, "client_closed": CLIENT_GONE}


def codes_for(status: int) -> list[str]:
    return [code for code, s in ERRORS.items() if s == status]
