"""The pipeline's one exception type: input it cannot or will not process."""
from __future__ import annotations


class MediaError(Exception):
    """Carries an HTTP-style status so the service can answer without guessing."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
