"""Stage `alignment`: cross-model and self subspace comparison with null baselines (principal angles,
cos^2 overlap, linear map fit on neutral sentences, Procrustes, CCA, CKA, k-sweep)."""


from tqdm.auto import tqdm

from emotion_circuits import alignment as al
from emotion_circuits import cli, paths
from emotion_circuits.activations import load_activations, model_dirname
from emotion_circuits.errors import UserError
from emotion_circuits.io import staged_outputs, write_json
from emotion_circuits.models import RANDOM_INIT_SUFFIX


def _load(model: str, position: str, hook: str):
    path = paths.ACTIVATIONS / model_dirname(model)
    if not path.exists():
        return None, None
    index, acts = load_activations(path, position)
    layers = sorted({int(k.split(".")[1]) for k in acts})
    return index, [acts[f"blocks.{layer}.hook_{hook}"] for layer in layers]


def run(params, args) -> None:
    p = params.alignment
    data, random_init = {}, {}
    for model in params.models:
        index, layers = _load(model, p.position, p.hook)
        if index is None:
            raise UserError(f"no activations for {model!r}: run `dvc repro activations` first")
        data[model] = (index, layers)
        random_init[model] = _load(model + RANDOM_INIT_SUFFIX, p.position, p.hook)[1]
    ids = data[params.models[0]][0]["id"].tolist()
    for model, (index, _) in data.items():
        if index["id"].tolist() != ids:
            raise UserError(f"activations of {model!r} were computed on different rows; rerun the activations stage")
    labels = data[params.models[0]][0]["emotion"].to_numpy()
    split = data[params.models[0]][0]["split"].to_numpy()
    jobs = [(a, b, la, lb) for a in params.models for b in params.models
            for la, lb in al.layer_pairs(len(data[a][1]), len(data[b][1]), p.n_layer_pairs)]
    # Each (model, layer, feature mode) is embedded (prepared, PCA-reduced, Gram matrix) once for all its pairs.
    cache = al.EmbeddingCache(split == "fit", p.massive_share, p.reduce_dim)
    settings = {"hook": p.hook, "position": p.position, "variant": p.primary_variant, "reduce_dim": p.reduce_dim}
    results, maps = [], {}
    with staged_outputs(*paths.STAGES["alignment"].targets()) as (out, metrics_path, plots):
        out.mkdir()
        plots.mkdir()
        for a, b, la, lb in tqdm(jobs, desc="alignment", disable=args.no_progress):
            similarity = {}
            for variant in p.variants:
                cfg = al.variant_config(variant, p, params.seed)
                ea = cache.get((a, la), data[a][1][la], cfg.features)
                eb = cache.get((b, lb), data[b][1][lb], cfg.features)
                er = (cache.get((a + RANDOM_INIT_SUFFIX, la), random_init[a][la], cfg.features)
                      if random_init[a] is not None else None)
                if cfg.features not in similarity:
                    similarity[cfg.features] = al.similarity_scores(ea, eb, labels, split, p.n_cka_perm, params.seed)
                res, fitted = al.align_embeddings(ea, eb, labels, split, cfg, er)
                results.append({"a": a, "b": b, "layer_a": la, "layer_b": lb, "variant": variant,
                                **similarity[cfg.features], **res})
                if variant == p.primary_variant:
                    maps.setdefault((a, b), {})[al.layer_key(la, lb)] = al.DirectionMap.from_fit(
                        fitted, ea, eb, cfg.reduce, {"source_layer": la, "target_layer": lb, "ridge_alpha": fitted.alpha,
                                                     "map_r2_heldout": fitted.r2_heldout, **settings})
        for (a, b), layer_maps in maps.items():
            al.save_direction_maps(out / "maps" / al.map_filename(a, b), layer_maps, a, b, settings)
        fit = split == "fit"
        grams = {m: [al.centred_gram(al.prepare_features(x, fit, "zscore", p.massive_share)[0]) for x in layers]
                 for m, (_, layers) in data.items()}
        grids = {(a, b): al.cka_grid(grams[a], grams[b]) for i, a in enumerate(params.models) for b in params.models[i + 1:]}
        massive = {m: al.massive_report(layers, split, p.massive_share) for m, (_, layers) in data.items()}
        al.write_outputs(results, grids, massive, p, out, plots)
        write_json(metrics_path, al.summarise(results, massive, p, params.models))


if __name__ == "__main__":
    cli.main("alignment", __doc__, run)
