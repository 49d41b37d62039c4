"""Live answers from a camera and a microphone over a WebSocket (`/v1/stream`, docs/streaming.md)."""
