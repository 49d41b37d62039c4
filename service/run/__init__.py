"""Running the service: the server's entry point, background bundle loading, the CLI over
files and folders, the health probe, deployment settings, and a child-process harness."""
