"""emotion-circuits: do language models share an emotion subspace, and can we steer along it?"""

EMOTIONS: tuple[str, ...] = ("gratitude", "anger", "apology")
REFERENCE: str = "neutral"
LABELS: tuple[str, ...] = (*EMOTIONS, REFERENCE)

__version__ = "0.1.0"
