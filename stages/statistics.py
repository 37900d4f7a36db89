"""Stage `statistics`: every effect of the steering, head and neuron stages against its matching null (Cohen's d,
Hedges' g, bootstrap CI, permutation p, Benjamini-Hochberg within each family, power), and the k-selection of the
alignment sweep. Extra effect tables join through dvc.yaml: any `effect_samples.parquet` among this stage's deps."""

from pathlib import Path

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.stats.effects import single_effect_samples, sweep_effect_samples
from emotion_circuits.stats.kselect import NULL_BANDS, select_k, summarise_k
from emotion_circuits.stats.plots import write_plots
from emotion_circuits.stats.power import power_table
from emotion_circuits.stats.samples import combine_samples, declared_effect_samples, load_effect_samples
from emotion_circuits.stats.summary import analyse_samples, family_summary, headlines
from emotion_circuits.errors import DataError
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs, write_parquet
from emotion_circuits.store.integrity import checked


SWEEP = paths.STEERING_SWEEP / "generations.parquet"
SINGLE = paths.STEERING / "generations.parquet"
ALIGNMENT = paths.ALIGNMENT / "scores.parquet"


def run(params, args) -> None:
    st = params.statistics
    for path in (SWEEP, SINGLE, ALIGNMENT):
        if not path.exists():
            raise DataError(f"{path} not found: run `dvc repro {path.parts[1]}` first")
    sources = {str(SWEEP): sweep_effect_samples(read_parquet(SWEEP), st.metric_families),
               str(SINGLE): single_effect_samples(read_parquet(SINGLE), st.metric_families)}
    dropped = {}
    for path in declared_effect_samples(Path("dvc.yaml")):
        sources[str(path)] = load_effect_samples([checked(path)])
        dropped.update(sources[str(path)].attrs.get("dropped_non_finite", {}))
    samples = combine_samples(sources)
    effects = analyse_samples(samples, st, params.seed, progress=not args.no_progress)
    ktable = select_k(read_parquet(ALIGNMENT), params.alignment.primary_variant)
    primary = params.steering_common.primary_metric
    metrics = {"settings": {"n_boot": st.n_boot, "n_perm": st.n_perm, "ci_level": st.ci_level,
                            "ci_method": st.ci_method, "fdr_alpha": st.fdr_alpha, "seed": params.seed,
                            "primary_metric": primary, "sources": sorted(sources),
                            "dropped_non_finite": dropped},
               "families": family_summary(effects, st), "headline": headlines(effects, primary),
               "power": {**power_table(st), "achieved_by_family": {
                   f: v["median_power"] for f, v in family_summary(effects, st).items()}},
               "alignment_k": {"variant": params.alignment.primary_variant, "null_band": list(NULL_BANDS),
                               "pairs": summarise_k(ktable)}}
    with staged_outputs(*paths.STAGES["statistics"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        write_parquet(out / "effect_samples.parquet", samples)
        write_parquet(out / "effects.parquet", effects)
        write_parquet(out / "k_selection.parquet", ktable)
        write_plots(effects, ktable, live, primary)
        live.log_metrics(metrics)


if __name__ == "__main__":
    cli.main("statistics", __doc__, run)
