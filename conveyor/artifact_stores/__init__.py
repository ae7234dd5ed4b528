"""The artifact stores, one module each: `local` (a directory, the default) and `s3`
(an S3-compatible object store, for executors and gateways on many hosts). Both
implement conveyor.artifacts.ArtifactStore; conveyor.artifacts.open_artifact_store
picks one from the settings."""
