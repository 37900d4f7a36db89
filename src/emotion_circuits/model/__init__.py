"""Models: loading packaged/HF models, the one architecture adapter per family (arch/), hook names, extraction."""
