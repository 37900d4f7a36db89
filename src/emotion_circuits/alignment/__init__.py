"""Cross-model alignment: is it the same emotion subspace in different coordinates?

Learn a linear map from model A's to model B's residuals on neutral sentences only, push A's emotion subspaces
through it, and score their overlap with B's own against nulls that would give the same number without shared
emotion geometry. One concept a module:
- `features`: feature modes (raw / zscore / drop_massive) and PCA reductions of a layer (`Embedding`, cached).
- `subspaces`: per-emotion principal subspaces, batched over label sets.
- `maps`: ridge maps (batched leave-one-out alpha) and the saved `DirectionMap` (save / load).
- `metrics`: overlap, random-subspace draws, CCA, Procrustes, CKA, RSA, emotion geometry; `null_summary`.
- `nulls/`: the registry of overlap nulls, one file each (add a null: one file there).
- `variants`: the analysis recipes named by params `alignment.variants`.
- `layer_pair`: all scores of one layer pair in one variant (`align_embeddings`).
- `verdict`, `pairs`, `tables`: the metrics JSON and verdicts, model-pair summaries, parquet / CSVs / figures.
"""
