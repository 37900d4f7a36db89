"""Stage `alignment`: cross-model and self subspace comparison with null baselines (principal angles,
cos^2 overlap, linear map fit on neutral sentences, Procrustes, CCA, CKA, k-sweep)."""


from emotion_circuits.alignment import features, maps, metrics, tables, verdict
from emotion_circuits.alignment.run import STATE, run_groups
from emotion_circuits.directions.geometry import layer_pairs
from emotion_circuits.model.site import Site
from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.store.activations import load_activations, model_dirname
from emotion_circuits.errors import UserError
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import staged_outputs
from emotion_circuits.model.names import RANDOM_INIT_SUFFIX


def _load(model: str, position: str, hook: str):
    path = paths.ACTIVATIONS / model_dirname(model)
    if not path.exists():
        return None, None
    index, acts = load_activations(path, position)
    layers = sorted({Site.parse(k).layer for k in acts})
    return index, [acts[Site(layer, hook).name] for layer in layers]


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
    groups = [[(a, b, la, lb) for la, lb in layer_pairs(len(data[a]), len(data[b]), p.n_layer_pairs)]
              for a in params.models for b in params.models]
    settings = {"hook": p.hook, "position": p.position, "variant": p.primary_variant, "reduce_dim": p.reduce_dim}
    STATE.clear()
    STATE.update(p=p, seed=params.seed, data=data, random_init=random_init, labels=labels, split=split,
                  settings=settings)
    workers = p.workers or (os.cpu_count() or 1)
    with staged_outputs(*paths.STAGES["alignment"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        results, fitted_maps = [], {}
        for (a, b, la, lb), (rows, fitted_map) in zip([j for g in groups for j in g],
                                                      run_groups(groups, workers, not args.no_progress)):
            results += rows
            fitted_maps.setdefault((a, b), {})[maps.layer_key(la, lb)] = fitted_map
        for (a, b), layer_maps in fitted_maps.items():
            maps.save_direction_maps(out / "maps" / maps.map_filename(a, b), layer_maps, a, b, settings)
        fit = split == "fit"
        grams = {m: [metrics.centred_gram(features.prepare_features(x, fit, "zscore", p.massive_share)[0]) for x in layers]
                 for m, layers in data.items()}
        grids = {(a, b): metrics.cka_grid(grams[a], grams[b]) for i, a in enumerate(params.models) for b in params.models[i + 1:]}
        massive = {m: features.massive_report(layers, split, p.massive_share) for m, layers in data.items()}
        tables.write_outputs(results, grids, massive, p, out, live)
        live.log_metrics(verdict.summarise(results, massive, p, params.models))
        STATE.clear()


if __name__ == "__main__":
    cli.main("alignment", __doc__, run)
