"""The built-in job kinds, one module each, registered like any user's kind (see
conveyor/kinds/registry.py)."""
