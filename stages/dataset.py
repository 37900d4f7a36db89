"""Stage `dataset`: validate, deduplicate and split the bundled data (hand-written and/or the GoEmotions subset,
`dataset.source`) into results/dataset/, plus judge_train.parquet (the rows judges may train on)."""


from emotion_circuits import cli, data
from emotion_circuits.store import paths
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import staged_outputs, write_json, write_parquet


def run(params, args) -> None:
    p = params.dataset
    sentences, judge_train, metrics = data.build_dataset(
        p.path, p.test_size, params.seed, p.profile, p.smoke_per_emotion, p.max_tokens,
        source=p.source, goemotions=p.goemotions, goemotions_per_class=p.goemotions_per_class)
    real_world = data.build_real_world(p.real_world, p.max_tokens)
    prompts = data.build_prompts(p.steering_prompts, p.max_tokens)
    lexicons = data.load_lexicons(p.lexicons)
    metrics.update(n_real_world=len(real_world), n_steering_prompts=len(prompts),
                   lexicon_sizes={k: len(v) for k, v in lexicons.items()})
    with staged_outputs(*paths.STAGES["dataset"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        write_parquet(out / "sentences.parquet", sentences)
        write_parquet(out / "judge_train.parquet", judge_train)  # fit rows + GoEmotions pool: what judges may train on
        write_parquet(out / "real_world.parquet", real_world)
        write_parquet(out / "steering_prompts.parquet", prompts)
        write_json(out / "lexicons.json", lexicons)
        live.log_metrics(metrics)


if __name__ == "__main__":
    cli.main("dataset", __doc__, run)
