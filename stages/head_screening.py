"""Stage `head_screening`: ablate every attention head (batched, exact) and rank heads per emotion by the change
of the final residual's emotion projection, lexicon log-probabilities and attention on emotion words."""

from emotion_circuits import EMOTIONS, cli
from emotion_circuits.heads import runs as head_runs
from emotion_circuits.store import paths
from emotion_circuits.heads import engine as H
from emotion_circuits.data import load_lexicons
from emotion_circuits.reporting.live import Stopwatch, stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs, write_parquet
from emotion_circuits.model.info import stage_model
from emotion_circuits.model.site import Site


def run(params, args) -> None:
    hp, sc = params.heads, params.head_screening
    # first: params that cannot fit the model (from its header/config, no weights) fail before anything is read
    stage_model(hp.model, "heads.model", params.models, sc.max_new_tokens if sc.evaluate_top_n else None)
    sentences = head_runs.for_heads(read_parquet(paths.DATASET / "sentences.parquet"), params.heads)
    emo = head_runs.select_sentences(sentences, hp.split, hp.n_sentences, params.seed)
    lm = head_runs.head_model(hp, params.seed)
    head_runs.check_lengths(lm, sentences, params.dataset.max_tokens, hp.prepend_bos, "head_screening")
    readout = head_runs.load_readout(paths.VECTORS, lm, load_lexicons(paths.DATASET / "lexicons.json"))
    with staged_outputs(*paths.STAGES["head_screening"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        means = head_runs.ablation_means(lm, sentences, emo, hp, sc.ablation, params.seed)
        table = head_runs.screen(lm, emo, readout, hp, sc, params.seed, means,  # device `auto`: per actor
                                 progress=not args.no_progress, execution=params.execution)
        live.log_timing({"screen": live.stopwatch.elapsed()})
        summary = head_runs.screen_summary(table, params.statistics, params.seed)
        attribution, agreement = None, {}
        if sc.attribution:
            attribution_clock = Stopwatch()
            full = head_runs.select_sentences(sentences, "all", sc.attribution_sentences, params.seed)
            attribution = head_runs.attribution_screen(lm, full, readout, sc.ablation, hp.batch_size,
                                                       hp.prepend_bos, means, progress=not args.no_progress,
                                                       ci=params.statistics, seed=params.seed)
            live.log_timing({"attribution": attribution_clock.elapsed()})
            agreement = {"n_sentences": len(full),
                         "per_emotion": head_runs.attribution_agreement(summary, attribution, head_runs.REPORT_TOP)}
        # the seeds' metric (attention on emotion words vs neutral), clean passes only: on every screened sentence
        # of the attribution selection (the full dataset by default), else on the exactly screened ones
        pool = head_runs.select_sentences(sentences, "all" if sc.attribution else hp.split,
                                          sc.attribution_sentences if sc.attribution else hp.n_sentences,
                                          params.seed, [*EMOTIONS, "neutral"])
        attention = head_runs.seeds_attention_scores(lm, pool[pool["emotion"] != "neutral"],
                                                     pool[pool["emotion"] == "neutral"], hp.batch_size,
                                                     hp.prepend_bos)
        top = head_runs.top_heads(summary, sc.evaluate_top_n) if sc.evaluate_top_n else {}
        evaluators = _evaluators(sc, params.seed) if top else []
        evaluation = head_runs.evaluate_heads(lm, top, emo, evaluators, sc.n_generate, sc.max_new_tokens,
                                              hp.prepend_bos)
        write_parquet(out / "screening.parquet", table)
        write_parquet(out / "summary.parquet", summary)
        if attribution is not None:
            write_parquet(out / "attribution.parquet", attribution)
        write_parquet(out / "generation.parquet", evaluation)
        write_parquet(out / "attention_scores.parquet", attention)
        write_parquet(out / "effect_samples.parquet", head_runs.screen_effect_samples(table, sc.ablation))
        write_parquet(out / "sentences.parquet", emo[["id", "emotion", "split"]])
        head_runs.heatmaps(summary, lm.n_layers, H.arch(lm).n_heads, live)
        a = H.arch(lm)
        info = {"model": lm.name, "ablation": sc.ablation, "n_heads": a.n_layers * a.n_heads,
                "n_kv_heads_per_layer": a.n_kv_heads, "n_sentences": {e: int((emo["emotion"] == e).sum())
                                                                     for e in sorted(set(emo["emotion"]))},
                "readout": f"{Site(lm.n_layers - 1, 'resid_post').name} emotion vectors (sentence_end), unit norm",
                "dtype": str(next(lm.hf_model.parameters()).dtype).removeprefix("torch."),
                "attribution": agreement}
        live.log_timing({"device": str(lm.device), "executor": params.executor})
        live.log_metrics(head_runs.screen_metrics(summary, head_runs.REPORT_TOP, evaluation, info, attention))


def _evaluators(sc, seed):
    from emotion_circuits.evaluation.catalog import build_evaluators

    return build_evaluators(sc.evaluators, load_lexicons(paths.DATASET / "lexicons.json"),
                            read_parquet(paths.DATASET / "judge_train.parquet"), seed)


if __name__ == "__main__":
    cli.main("head_screening", __doc__, run)
