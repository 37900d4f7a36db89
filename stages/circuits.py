"""Stage `circuits`: MLP neuron saliency (activation x gradient of the emotion projection) and ablation of the top
neurons against random neurons; OV and QK token tables of the screening's top heads."""

from emotion_circuits import EMOTIONS, cli
from emotion_circuits.heads import circuits
from emotion_circuits.model.info import stage_model
from emotion_circuits.heads import runs as head_runs
from emotion_circuits.store import paths
from emotion_circuits.heads import engine as H
from emotion_circuits.data import load_lexicons
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import read_parquet, staged_outputs, write_parquet, write_tensors


def run(params, args) -> None:
    hp, cp = params.heads, params.circuits
    # first: params that cannot fit the model (from its header/config, no weights) fail before anything is read
    stage_model(hp.model, "heads.model", params.models)
    sentences = head_runs.for_heads(read_parquet(paths.DATASET / "sentences.parquet"), params.heads)
    emo = head_runs.select_sentences(sentences, hp.split, hp.n_sentences, params.seed)
    lexicons = load_lexicons(paths.DATASET / "lexicons.json")
    lm = head_runs.head_model(hp, params.seed)
    head_runs.check_lengths(lm, sentences, params.dataset.max_tokens, hp.prepend_bos, "circuits")
    readout = head_runs.load_readout(paths.VECTORS, lm, lexicons)
    top = head_runs.top_heads(read_parquet(paths.SCREENING / "summary.parquet"),
                               params.head_patching.top_k)
    heads = sorted({h for hs in top.values() for h in hs})
    with staged_outputs(*paths.STAGES["circuits"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        saliency, top_neurons, neuron_table = head_runs.neuron_experiments(lm, emo, readout, hp, cp, params.seed,
                                                                           progress=not args.no_progress)
        layer_dirs = head_runs.layer_directions(paths.VECTORS, lm, "resid_post")
        ov = circuits.ov_table(lm, heads, {m: layer_dirs[m] for m in range(lm.n_layers)}, EMOTIONS, cp.n_tokens)
        queries = head_runs.sentence_end_means(lm, emo, hp.batch_size, hp.prepend_bos)
        lex_ids = dict(zip(EMOTIONS, readout.token_sets))
        qk_top, qk_lex = circuits.qk_table(lm, heads, queries, lex_ids, cp.n_tokens)
        write_tensors(out / "neuron_saliency.safetensors", {"saliency": saliency},
                      {"model": lm.name, "emotions": ",".join(EMOTIONS), "shape": "emotion,layer,neuron"})
        write_parquet(out / "top_neurons.parquet", top_neurons)
        write_parquet(out / "neuron_ablation.parquet", neuron_table)
        write_parquet(out / "effect_samples.parquet", head_runs.neuron_effect_samples(neuron_table))
        write_parquet(out / "ov_tokens.parquet", ov)
        write_parquet(out / "qk_tokens.parquet", qk_top)
        write_parquet(out / "qk_lexicon.parquet", qk_lex)
        info = {"model": lm.name, "heads": [H.head_label(*h) for h in heads], "n_neurons": cp.n_neurons,
                "n_random_sets": cp.n_random_sets}  # wall/CPU seconds: live's timing.json
        live.log_metrics(head_runs.circuit_metrics(top_neurons, neuron_table, ov, qk_lex, info))


if __name__ == "__main__":
    cli.main("circuits", __doc__, run)
