"""Stage `head_patching`: the top heads per emotion ablated singly and jointly (circuit ablation), and their mean
emotional output patched into neutral runs (and neutral into emotional) in modes result / v_only / pattern_v,
each next to random same-size head sets."""

from emotion_circuits import cli
from emotion_circuits.heads import runs as head_runs
from emotion_circuits.store import paths
from emotion_circuits.data import load_lexicons
from emotion_circuits.errors import ParamsError
from emotion_circuits.model.info import stage_model
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs, write_parquet


def run(params, args) -> None:
    hp, pp, ablation = params.heads, params.head_patching, params.head_screening.ablation
    # first: params that cannot fit the model (from its header/config, no weights) fail before anything is read
    info = stage_model(hp.model, "heads.model", params.models)
    chosen = [head_runs.parse_head(head) for head in pp.patch_heads]
    for m, h in chosen:
        if not (m < info.n_layers and h < info.n_heads):
            raise ParamsError(f"head_patching.patch_heads: L{m}H{h} does not exist in {hp.model} "
                              f"({info.n_layers} layers x {info.n_heads} heads)")
    sentences = head_runs.for_heads(read_parquet(paths.DATASET / "sentences.parquet"), params.heads)
    emo = head_runs.select_sentences(sentences, hp.split, hp.n_sentences, params.seed)
    neutral = head_runs.select_sentences(sentences, hp.split, hp.n_sentences, params.seed, ["neutral"])
    lm = head_runs.head_model(hp, params.seed)
    head_runs.check_lengths(lm, sentences, params.dataset.max_tokens, hp.prepend_bos, "head_patching")
    if chosen:
        heads = {e: chosen for e in head_runs.EMOTIONS}
    else:
        heads = head_runs.top_heads(read_parquet(paths.SCREENING / "summary.parquet"), pp.top_k)
    readout = head_runs.load_readout(paths.VECTORS, lm, load_lexicons(paths.DATASET / "lexicons.json"))
    with staged_outputs(*paths.STAGES["head_patching"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        means = head_runs.ablation_means(lm, sentences, emo, hp, ablation, params.seed)
        table = head_runs.patch_experiments(lm, heads, emo, neutral, readout, hp, pp, ablation, means, params.seed,
                                            progress=not args.no_progress)
        summary = head_runs.patch_summary(table)
        write_parquet(out / "patching.parquet", table)
        write_parquet(out / "summary.parquet", summary)
        write_parquet(out / "effect_samples.parquet", head_runs.patch_effect_samples(table))
        info = {"model": lm.name, "ablation": ablation, "patch_modes": list(pp.patch_modes),
                "n_random_sets": pp.n_random_sets}  # wall/CPU seconds: live's timing.json
        live.log_metrics(head_runs.patch_metrics(summary, heads, info))


if __name__ == "__main__":
    cli.main("head_patching", __doc__, run)
