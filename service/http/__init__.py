"""The HTTP service: app factory, routes, the contract's schemas and error table, upload
streaming and spooling, backpressure, observability and the demo page."""
