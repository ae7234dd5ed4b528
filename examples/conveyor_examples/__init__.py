"""Example job kinds for Conveyor, as a user would package them.

- `conveyor_examples.chat`: `chat` and `chat-batch` (async): a conversation in, a
  reply out, from a pluggable responder (`local` and `echo` run without any model
  service).
- `conveyor_examples.wordcount`: `wordcount` (blocking, plain `def`): word
  frequencies of texts or of a generated corpus, with progress and cancellation.
- `conveyor_examples.flaky`: `flaky` (async): fails its first attempts, or for good,
  as asked; for trying out retry policies.

An executor serves them when they are named in CONVEYOR_KINDS, or, once this package
is installed, through its `conveyor.kinds` entry points.
"""

#: The modules of this package that define kinds (what CONVEYOR_KINDS would name).
KIND_MODULES = ("conveyor_examples.chat", "conveyor_examples.wordcount", "conveyor_examples.flaky")
