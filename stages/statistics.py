"""Stage `statistics`: every effect of the steering, head and neuron stages against its matching null (Cohen's d,
Hedges' g, bootstrap CI, permutation p, Benjamini-Hochberg within each family, power), and the k-selection of the
alignment sweep. Extra effect tables join through dvc.yaml: any `effect_samples.parquet` among this stage's deps."""

from pathlib import Path

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.stats import effects as S
from emotion_circuits.errors import DataError
from emotion_circuits.store.io import read_parquet, staged_outputs, write_json, write_parquet


SWEEP = paths.STEERING_SWEEP / "generations.parquet"
SINGLE = paths.STEERING / "generations.parquet"
ALIGNMENT = paths.ALIGNMENT / "scores.parquet"


def run(params, args) -> None:
    st = params.statistics
    cfg = S.StatsConfig(st.n_boot, st.n_perm, st.ci_level, st.ci_method, st.fdr_alpha, st.power, st.power_alpha,
                        st.power_ds, params.seed)
    for path in (SWEEP, SINGLE, ALIGNMENT):
        if not path.exists():
            raise DataError(f"{path} not found: run `dvc repro {path.parts[1]}` first")
    sources = {str(SWEEP): S.sweep_effect_samples(read_parquet(SWEEP), st.metric_families),
               str(SINGLE): S.single_effect_samples(read_parquet(SINGLE), st.metric_families)}
    dropped = {}
    for path in S.declared_effect_samples(Path("dvc.yaml")):
        sources[str(path)] = S.load_effect_samples([path])
        dropped.update(sources[str(path)].attrs.get("dropped_non_finite", {}))
    samples = S.combine_samples(sources)
    effects = S.analyse_samples(samples, cfg, progress=not args.no_progress)
    ktable = S.select_k(read_parquet(ALIGNMENT), params.alignment.primary_variant)
    primary = params.steering.primary_metric
    metrics = {"settings": {"n_boot": st.n_boot, "n_perm": st.n_perm, "ci_level": st.ci_level,
                            "ci_method": st.ci_method, "fdr_alpha": st.fdr_alpha, "seed": params.seed,
                            "primary_metric": primary, "sources": sorted(sources),
                            "dropped_non_finite": dropped},
               "families": S.family_summary(effects, cfg), "headline": S.headlines(effects, primary),
               "power": {**S.power_table(cfg), "achieved_by_family": {
                   f: v["median_power"] for f, v in S.family_summary(effects, cfg).items()}},
               "alignment_k": {"variant": params.alignment.primary_variant, "null_band": list(S.NULL_BANDS),
                               "pairs": S.summarise_k(ktable)}}
    with staged_outputs(*paths.STAGES["statistics"].targets()) as (out, metrics_path, plots):
        out.mkdir()
        plots.mkdir()
        write_parquet(out / "effect_samples.parquet", samples)
        write_parquet(out / "effects.parquet", effects)
        write_parquet(out / "k_selection.parquet", ktable)
        S.write_plots(effects, ktable, out / "plots", plots, primary)
        write_json(metrics_path, metrics)


if __name__ == "__main__":
    cli.main("statistics", __doc__, run)
