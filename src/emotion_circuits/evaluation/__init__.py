"""Text evaluators that score generated continuations (one file per evaluator, registered by name)."""
