"""Stage `judges`: every evaluator's own decision rule validated on held-out hand-written (in-domain) and real
(GoEmotions) test-split text it was never trained on: per-class recall, balanced accuracy with a bootstrap CI."""

import logging

from emotion_circuits import cli
from emotion_circuits.data import load_lexicons
from emotion_circuits.evaluation import validation
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store import paths
from emotion_circuits.store.io import read_parquet, staged_outputs, write_parquet


def run(params, args) -> None:
    p = params.judges
    sentences = read_parquet(paths.DATASET / "sentences.parquet")
    train = read_parquet(paths.DATASET / "judge_train.parquet")
    lexicons = load_lexicons(paths.DATASET / "lexicons.json")
    held_out = validation.portions(sentences)
    with staged_outputs(*paths.STAGES["judges"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        results = validation.judge_all(p.evaluators, lexicons, train, held_out, p.n_boot, params.seed,
                                       progress=lambda name: live.log_timing({name: live.stopwatch.elapsed()}))
        write_parquet(out / "validation.parquet", validation.validation_table(results))
        live.log_metrics({**results, **validation.goals(results)})
        for line in validation.summary_lines(results):
            logging.info("%s", line)


if __name__ == "__main__":
    cli.main("judges", __doc__, run)
