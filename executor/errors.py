"""How a job attempt fails (see conveyor/kinds/errors.py, where JobError lives: the
public kind API raises it too)."""

from conveyor.kinds.errors import JobError

__all__ = ["JobError"]
