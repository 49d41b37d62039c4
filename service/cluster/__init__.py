"""The service on a Ray cluster (the optional `cluster` extra, docs/batch.md): batch scoring
of an archive on Ray Data (`batch`, `emotion-av batch`) and the HTTP service as a Ray Serve
application (`serve`). Importing this package loads nothing; its modules import Ray."""
