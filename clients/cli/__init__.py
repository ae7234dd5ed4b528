"""The `conveyor` command line: job commands over the SDK, and `up`/`demo`."""
