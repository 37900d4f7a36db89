"""Stage `vectors`: emotion vectors, norms, cosine tables, PCA subspaces and linear probes per layer, and (with
`dataset.source: both`) cross-source transfer of directions and probes (`directions.transfer`)."""

import time

import pandas as pd
from tqdm.auto import tqdm

from emotion_circuits import cli
from emotion_circuits.store import paths
from emotion_circuits.directions import transfer as tr
from emotion_circuits.directions import vectors as vec
from emotion_circuits.store.activations import load_activations, model_dirname
from emotion_circuits.reporting.live import stage_live
from emotion_circuits.store.io import staged_outputs, write_parquet, write_tensors


def run(params, args) -> None:
    p = params.vectors
    tables: dict[str, list] = {"norms": [], "cosines": [], "probes": [], "pca": []}
    vectors_by_model = {}
    transfer_rows: tuple[list, list] = ([], [])
    transfer_cpu = 0.0
    with staged_outputs(*paths.STAGES["vectors"].targets()) as (out, live_dir), stage_live(live_dir) as live:
        out.mkdir()
        jobs = [(m, pos) for m in params.models for pos in params.activations.positions]
        for model, position in tqdm(jobs, desc="vectors", disable=args.no_progress):
            index, acts = load_activations(paths.ACTIVATIONS / model_dirname(model), position)
            tensors, norms, cosines, probes, pcas = vec.analyse_model(
                model, position, acts, index["emotion"].to_numpy(), index["split"].to_numpy(), p.n_components,
                p.probe_hooks, params.seed)
            write_tensors(out / model_dirname(model) / f"{position}.safetensors", tensors,
                          {"model": model, "position": position, "emotions": ",".join(vec.EMOTIONS)})
            vectors_by_model[(model, position)] = tensors
            start = time.process_time()
            directions, probe_rows = tr.analyse_transfer(model, position, acts, index, p, params.seed)
            transfer_cpu += time.process_time() - start
            transfer_rows[0].extend(directions)
            transfer_rows[1].extend(probe_rows)
            for key, rows in zip(("norms", "cosines", "probes", "pca"), (norms, cosines, probes, pcas)):
                tables[key].extend(rows)
        frames = {k: pd.DataFrame(v) for k, v in tables.items()}
        for key, frame in frames.items():
            write_parquet(out / f"{key}.parquet", frame)
        vec.write_plots(frames, live)
        transfer, probe_transfer = tr.frames(*transfer_rows)
        write_parquet(out / "transfer.parquet", transfer)
        write_parquet(out / "probe_transfer.parquet", probe_transfer)
        tr.write_plots(transfer, probe_transfer, live)
        live.log_timing({"transfer_cpu_s": round(transfer_cpu, 1)})
        live.log_metrics({**vec.summarise(frames, vectors_by_model, params.models),
                          "transfer": tr.summarise(transfer, probe_transfer), "transfer_goals": tr.GOALS})


if __name__ == "__main__":
    cli.main("vectors", __doc__, run)
