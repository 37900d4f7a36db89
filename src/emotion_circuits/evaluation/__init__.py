"""Text evaluators that score generated continuations: one file per evaluator, registered by name.

To add one: a new module here with a class that has `name`, `metrics` (its `Metric`s), `build(inputs)` and
`score(texts)`, decorated `@EVALUATORS.register("<name>")` (see `base.py`, `vader.py`), plus its test. Tables,
statistics families and own-emotion metrics pick it up from the registry (`catalog.py`).
"""

from emotion_circuits.registry import Registry, autoload

EVALUATORS: Registry = Registry("evaluator")

autoload(__name__, __path__)
