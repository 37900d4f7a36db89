"""Steering: the batched generation engine, the sweep/single/cross-model experiments and their tables."""
