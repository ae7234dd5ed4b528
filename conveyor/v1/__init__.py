"""Generated from protos/conveyor/v1 by protos/generate.py. Do not edit."""
