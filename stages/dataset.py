"""Stage `dataset`: validate, deduplicate and split the bundled data into results/dataset/."""


from emotion_circuits import cli, data
from emotion_circuits.store import paths
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import staged_outputs, write_json, write_parquet


def run(params, args) -> None:
    p = params.dataset
    sentences, metrics = data.build_sentences(p.path, p.test_size, params.seed, p.profile, p.smoke_per_emotion,
                                              p.max_tokens)
    real_world = data.build_real_world(p.real_world, p.max_tokens)
    prompts = data.build_prompts(p.steering_prompts, p.max_tokens)
    lexicons = data.load_lexicons(p.lexicons)
    metrics.update(n_real_world=len(real_world), n_steering_prompts=len(prompts),
                   lexicon_sizes={k: len(v) for k, v in lexicons.items()})
    with staged_outputs(*paths.STAGES["dataset"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        write_parquet(out / "sentences.parquet", sentences)
        write_parquet(out / "real_world.parquet", real_world)
        write_parquet(out / "steering_prompts.parquet", prompts)
        write_json(out / "lexicons.json", lexicons)
        live.log_metrics(metrics)


if __name__ == "__main__":
    cli.main("dataset", __doc__, run)
