"""The alignment stage's layer pairs on worker processes: each ordered model pair is one group, run with
single-threaded BLAS in this process or on forked workers (the numbers do not depend on which). The stage
sets `STATE` (activations, labels, the frozen AlignmentParams) once before forking."""

from __future__ import annotations

from tqdm.auto import tqdm

from emotion_circuits.alignment import features, layer_pair, maps, metrics
from emotion_circuits.alignment.variants import VARIANTS
from emotion_circuits.model.names import RANDOM_INIT_SUFFIX


# Worker-process state: the activations and settings, set once per process (fork start: shared copy-on-write).
STATE: dict = {}


def align_pair_group(jobs: list[tuple[str, str, int, int]]) -> list[tuple[list[dict], dict]]:
    """Every variant of every layer pair of one ordered model pair: (result rows, primary-variant map) per job.
    Each job's numbers depend only on its inputs and the seed, so they do not depend on the process it ran in."""
    from threadpoolctl import threadpool_limits

    st = STATE
    p, seed, data, random_init, labels, split = (st[k] for k in ("p", "seed", "data", "random_init", "labels",
                                                                  "split"))
    cache = st.setdefault("cache", features.EmbeddingCache(split == "fit", p.massive_share, p.reduce_dim))
    out = []
    with threadpool_limits(1):  # single-threaded BLAS everywhere: the same sums whatever the process or machine
        for a, b, la, lb in jobs:
            rows, fitted_map, similarity = [], None, {}
            for variant in p.variants:
                v = VARIANTS[variant]
                ea = cache.get((a, la), data[a][la], v.features)
                eb = cache.get((b, lb), data[b][lb], v.features)
                er = (cache.get((a + RANDOM_INIT_SUFFIX, la), random_init[a][la], v.features)
                      if random_init[a] is not None else None)
                if v.features not in similarity:
                    similarity[v.features] = metrics.similarity_scores(ea, eb, labels, split, p.n_cka_perm, seed)
                res, fitted = layer_pair.align_embeddings(ea, eb, labels, split, p, variant, seed, er)
                rows.append({"a": a, "b": b, "layer_a": la, "layer_b": lb, "variant": variant,
                             **similarity[v.features], **res})
                if variant == p.primary_variant:
                    fitted_map = maps.DirectionMap.from_fit(
                        fitted, ea, eb, v.reduce, {"source_layer": la, "target_layer": lb, "ridge_alpha": fitted.alpha,
                                                     "map_r2_heldout": fitted.r2_heldout, **st["settings"]})
            out.append((rows, fitted_map))
    return out


def run_groups(groups: list[list[tuple]], workers: int, progress: bool) -> list[tuple[list[dict], dict]]:
    """The model-pair groups in order, in this process or on `workers` forked processes. Every group runs with
    single-threaded BLAS, so the numbers do not depend on the worker count or the machine's cores (multi-threaded
    BLAS sums in another order), and the cores work on separate groups instead of sharing small matrices."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    bar = tqdm(total=sum(map(len, groups)), desc="alignment", unit="layer pair", disable=not progress)
    done = []
    if workers <= 1 or len(groups) <= 1:
        for g in groups:
            done.append(align_pair_group(g))
            bar.update(len(g))
    else:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            for g, res in zip(groups, pool.map(align_pair_group, groups)):
                done.append(res)
                bar.update(len(g))
    bar.close()
    return [item for part in done for item in part]
