"""Model names with a meaning of their own, shared by the loader and by readers of stored results (which must not
depend on the loading code to find a null model's activations)."""

# `<model>__random-init`: the same architecture and tokenizer with freshly initialised (seeded) weights, the null
# model alignment must *not* align; its activations are stored under that name like any model's.
RANDOM_INIT_SUFFIX = "__random-init"
