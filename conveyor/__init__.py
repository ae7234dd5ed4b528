"""Conveyor's shared core: the Redis job store and its Lua state machine, settings,
logging, and the generated `conveyor.v1` API (see protos/)."""
