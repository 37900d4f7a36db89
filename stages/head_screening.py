"""Stage `head_screening`: ablate every attention head (batched, exact) and rank heads per emotion by the change
of the final residual's emotion projection, lexicon log-probabilities and attention on emotion words."""

import time


from emotion_circuits import EMOTIONS, cli
from emotion_circuits.heads import runs as head_runs
from emotion_circuits.store import paths
from emotion_circuits.heads import engine as H
from emotion_circuits.data import load_lexicons
from emotion_circuits.runtime.executor import execution_config
from emotion_circuits.store.io import read_parquet, staged_outputs, write_json, write_parquet
from emotion_circuits.model.loading import LoadSpec


def run(params, args) -> None:
    hp = params.heads
    sentences = read_parquet(paths.DATASET / "sentences.parquet")
    emo = head_runs.select_sentences(sentences, hp.split, hp.n_sentences, params.seed)
    lm = head_runs.head_model(hp, params.seed)
    readout = head_runs.load_readout(paths.VECTORS, lm, load_lexicons(paths.DATASET / "lexicons.json"))
    with staged_outputs(*paths.STAGES["head_screening"].targets()) as (out, metrics_path, plots):
        out.mkdir()
        plots.mkdir()
        start = time.perf_counter()
        means = head_runs.ablation_means(lm, sentences, emo, hp, params.seed)
        table = head_runs.screen(lm, emo, readout, hp.ablation, hp.batch_size, hp.prepend_bos, means,
                                 progress=not args.no_progress, execution=execution_config(params),
                                 loading=LoadSpec(hp.device, hp.dtype, params.seed))  # `auto`: per actor
        screen_seconds = time.perf_counter() - start
        summary = head_runs.screen_summary(table)
        attribution, agreement, attr_seconds = None, {}, 0.0
        if hp.attribution:
            t0 = time.perf_counter()
            full = head_runs.select_sentences(sentences, "all", hp.attribution_sentences, params.seed)
            attribution = head_runs.attribution_screen(lm, full, readout, hp.ablation, hp.batch_size,
                                                       hp.prepend_bos, means, progress=not args.no_progress)
            attr_seconds = time.perf_counter() - t0
            agreement = {"n_sentences": len(full), "seconds": round(attr_seconds, 1),
                         "per_emotion": head_runs.attribution_agreement(summary, attribution, max(hp.top_k, 1))}
        # the seeds' metric (attention on emotion words vs neutral), clean passes only: on every screened sentence
        # of the attribution selection (the full dataset by default), else on the exactly screened ones
        pool = head_runs.select_sentences(sentences, "all" if hp.attribution else hp.split,
                                          hp.attribution_sentences if hp.attribution else hp.n_sentences,
                                          params.seed, [*EMOTIONS, "neutral"])
        attention = head_runs.seeds_attention_scores(lm, pool[pool["emotion"] != "neutral"],
                                                     pool[pool["emotion"] == "neutral"], hp.batch_size,
                                                     hp.prepend_bos)
        top = head_runs.top_heads(summary, hp.evaluate_top_n) if hp.evaluate_top_n else {}
        evaluators = _evaluators(hp, sentences, params.seed) if top else []
        evaluation = head_runs.evaluate_heads(lm, top, emo, evaluators, hp.n_generate, hp.max_new_tokens,
                                              hp.prepend_bos)
        write_parquet(out / "screening.parquet", table)
        write_parquet(out / "summary.parquet", summary)
        if attribution is not None:
            write_parquet(out / "attribution.parquet", attribution)
        write_parquet(out / "generation.parquet", evaluation)
        write_parquet(out / "attention_scores.parquet", attention)
        write_parquet(out / "effect_samples.parquet", head_runs.screen_effect_samples(table, hp.ablation))
        write_parquet(out / "sentences.parquet", emo[["id", "emotion", "split"]])
        head_runs.heatmaps(summary, lm.n_layers, H.arch(lm).n_heads, plots)
        a = H.arch(lm)
        info = {"model": lm.name, "ablation": hp.ablation, "n_heads": a.n_layers * a.n_heads,
                "n_kv_heads_per_layer": a.n_kv_heads, "n_sentences": {e: int((emo["emotion"] == e).sum())
                                                                     for e in sorted(set(emo["emotion"]))},
                "readout": f"blocks.{lm.n_layers - 1}.hook_resid_post emotion vectors (sentence_end), unit norm",
                "dtype": str(next(lm.hf_model.parameters()).dtype).removeprefix("torch."),
                "attribution": {k: v for k, v in agreement.items() if k != "seconds"},
                "timing": {"device": str(lm.device), "executor": params.executor,
                           "screen_seconds": round(screen_seconds, 1), "attribution_seconds": round(attr_seconds, 1),
                           "total_seconds": round(time.perf_counter() - start, 1)}}
        write_json(metrics_path, head_runs.screen_metrics(summary, max(hp.top_k, 1), evaluation, info, attention))


def _evaluators(hp, sentences, seed):
    from emotion_circuits.evaluation.evaluators import build_evaluators

    return build_evaluators(hp.evaluators, load_lexicons(paths.DATASET / "lexicons.json"), sentences, seed)


if __name__ == "__main__":
    cli.main("head_screening", __doc__, run)
