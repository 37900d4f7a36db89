"""Stage `alignment`: cross-model and self subspace comparison with null baselines (principal angles,
cos^2 overlap, linear map fit on neutral sentences, Procrustes, CCA, CKA, k-sweep)."""


from tqdm.auto import tqdm

from emotion_circuits.alignment import core as al
from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.model.extraction import load_activations, model_dirname
from emotion_circuits.errors import UserError
from emotion_circuits.store.io import staged_outputs, write_json
from emotion_circuits.model.loading import RANDOM_INIT_SUFFIX


def _load(model: str, position: str, hook: str):
    path = paths.ACTIVATIONS / model_dirname(model)
    if not path.exists():
        return None, None
    index, acts = load_activations(path, position)
    layers = sorted({int(k.split(".")[1]) for k in acts})
    return index, [acts[f"blocks.{layer}.hook_{hook}"] for layer in layers]


# Worker-process state: the activations and settings, set once per process (fork start: shared copy-on-write).
_STATE: dict = {}


def _align_pair_group(jobs: list[tuple[str, str, int, int]]) -> list[tuple[list[dict], dict]]:
    """Every variant of every layer pair of one ordered model pair: (result rows, primary-variant map) per job.
    Each job's numbers depend only on its inputs and the seed, so they do not depend on the process it ran in."""
    from threadpoolctl import threadpool_limits

    st = _STATE
    p, seed, data, random_init, labels, split = (st[k] for k in ("p", "seed", "data", "random_init", "labels",
                                                                  "split"))
    cache = st.setdefault("cache", al.EmbeddingCache(split == "fit", p.massive_share, p.reduce_dim))
    out = []
    with threadpool_limits(1):  # single-threaded BLAS everywhere: the same sums whatever the process or machine
        for a, b, la, lb in jobs:
            rows, fitted_map, similarity = [], None, {}
            for variant in p.variants:
                cfg = al.variant_config(variant, p, seed)
                ea = cache.get((a, la), data[a][la], cfg.features)
                eb = cache.get((b, lb), data[b][lb], cfg.features)
                er = (cache.get((a + RANDOM_INIT_SUFFIX, la), random_init[a][la], cfg.features)
                      if random_init[a] is not None else None)
                if cfg.features not in similarity:
                    similarity[cfg.features] = al.similarity_scores(ea, eb, labels, split, p.n_cka_perm, seed)
                res, fitted = al.align_embeddings(ea, eb, labels, split, cfg, er)
                rows.append({"a": a, "b": b, "layer_a": la, "layer_b": lb, "variant": variant,
                             **similarity[cfg.features], **res})
                if variant == p.primary_variant:
                    fitted_map = al.DirectionMap.from_fit(
                        fitted, ea, eb, cfg.reduce, {"source_layer": la, "target_layer": lb, "ridge_alpha": fitted.alpha,
                                                     "map_r2_heldout": fitted.r2_heldout, **st["settings"]})
            out.append((rows, fitted_map))
    return out


def _run_groups(groups: list[list[tuple]], workers: int, progress: bool) -> list[tuple[list[dict], dict]]:
    """The model-pair groups in order, in this process or on `workers` forked processes. Every group runs with
    single-threaded BLAS, so the numbers do not depend on the worker count or the machine's cores (multi-threaded
    BLAS sums in another order), and the cores work on separate groups instead of sharing small matrices."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    bar = tqdm(total=sum(map(len, groups)), desc="alignment", unit="layer pair", disable=not progress)
    done = []
    if workers <= 1 or len(groups) <= 1:
        for g in groups:
            done.append(_align_pair_group(g))
            bar.update(len(g))
    else:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            for g, res in zip(groups, pool.map(_align_pair_group, groups)):
                done.append(res)
                bar.update(len(g))
    bar.close()
    return [item for part in done for item in part]


def run(params, args) -> None:
    import os

    p = params.alignment
    data, random_init, index0 = {}, {}, None
    for model in params.models:
        index, layers = _load(model, p.position, p.hook)
        if index is None:
            raise UserError(f"no activations for {model!r}: run `dvc repro activations` first")
        if index0 is not None and index["id"].tolist() != index0["id"].tolist():
            raise UserError(f"activations of {model!r} were computed on different rows; rerun the activations stage")
        index0 = index if index0 is None else index0
        data[model] = layers
        random_init[model] = _load(model + RANDOM_INIT_SUFFIX, p.position, p.hook)[1]
    labels, split = index0["emotion"].to_numpy(), index0["split"].to_numpy()
    groups = [[(a, b, la, lb) for la, lb in al.layer_pairs(len(data[a]), len(data[b]), p.n_layer_pairs)]
              for a in params.models for b in params.models]
    settings = {"hook": p.hook, "position": p.position, "variant": p.primary_variant, "reduce_dim": p.reduce_dim}
    _STATE.clear()
    _STATE.update(p=p, seed=params.seed, data=data, random_init=random_init, labels=labels, split=split,
                  settings=settings)
    workers = p.workers or (os.cpu_count() or 1)
    with staged_outputs(*paths.STAGES["alignment"].targets()) as (out, metrics_path, plots):
        out.mkdir()
        plots.mkdir()
        results, maps = [], {}
        for (a, b, la, lb), (rows, fitted_map) in zip([j for g in groups for j in g],
                                                      _run_groups(groups, workers, not args.no_progress)):
            results += rows
            maps.setdefault((a, b), {})[al.layer_key(la, lb)] = fitted_map
        for (a, b), layer_maps in maps.items():
            al.save_direction_maps(out / "maps" / al.map_filename(a, b), layer_maps, a, b, settings)
        fit = split == "fit"
        grams = {m: [al.centred_gram(al.prepare_features(x, fit, "zscore", p.massive_share)[0]) for x in layers]
                 for m, layers in data.items()}
        grids = {(a, b): al.cka_grid(grams[a], grams[b]) for i, a in enumerate(params.models) for b in params.models[i + 1:]}
        massive = {m: al.massive_report(layers, split, p.massive_share) for m, layers in data.items()}
        al.write_outputs(results, grids, massive, p, out, plots)
        write_json(metrics_path, al.summarise(results, massive, p, params.models))
        _STATE.clear()


if __name__ == "__main__":
    cli.main("alignment", __doc__, run)
