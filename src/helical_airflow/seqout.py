"""The outputs of a sequence run, in the same run folder as a single-cell run (store.merge, quality.quality_gate and
report.write_report hand a plan with a sequence input here):

- `embeddings.h5ad`: one row per record in input order (obs: id, length, the table's other columns),
  `obsm["X_<family>"]`; `embeddings.parquet`: id + one float32 list column `embedding`, for users outside AnnData;
- `manifest.json` (store.build_manifest: input sha256 and its sequence summary with the too-long policy, model,
  weights checksums, parameters, per-shard timings);
- `quality.json`: finite rows, norms, collapse and duplicate checks (quality.assess), label scores of the
  embeddings when a label column is given or found (no PCA-of-counts baseline: a sequence has no counts);
- `report.html`: the same report, with a length histogram in place of the counts QC.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import seqio
from .spec import Manifest, Plan, QualityReport

log = logging.getLogger(__name__)


def obs(plan: Plan) -> pd.DataFrame:
    return seqio.read_obs(plan.input)


def merge(plan: Plan) -> Manifest:
    import anndata as ad
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .store import (
        build_manifest,
        embeddings_key,
        load_embeddings,
        manifest_file,
        shard_results,
        write_json,
        write_with,
    )

    results = shard_results(plan)
    embeddings = load_embeddings(plan)
    table = obs(plan)
    adata = ad.AnnData(obs=table)
    adata.obsm[embeddings_key(plan)] = embeddings
    adata.uns["helical_airflow"] = {"run_key": plan.run_key, "model": plan.params.model, "fixture": plan.fixture,
                                    "manifest": "manifest.json"}  # fmt: skip
    write_with(plan.out_path / "embeddings.h5ad", lambda tmp: adata.write_h5ad(tmp))
    dim = embeddings.shape[1]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), type=pa.float32()), dim)
    arrow = pa.table({"id": pa.array(table["id"].astype(str).tolist()), "embedding": vectors})
    write_with(plan.out_path / "embeddings.parquet", lambda tmp: pq.write_table(arrow, tmp))
    manifest = build_manifest(plan, results)
    manifest = manifest.model_copy(update={"outputs": {**manifest.outputs, "parquet": "embeddings.parquet"}})
    write_json(manifest_file(plan), manifest)
    return manifest


def quality_gate(plan: Plan, label_key: str | None = None) -> QualityReport:
    from . import scores, telemetry
    from .errors import ConfigError
    from .quality import assess
    from .store import load_embeddings, load_manifest, manifest_file, write_json

    embeddings = load_embeddings(plan)
    report = assess(embeddings, plan.input.n_cells, plan.params.seed, plan.input.unit)
    table = obs(plan)
    if label_key is not None:
        problem = scores.usable_label_problem(table, label_key)
        if problem:
            raise ConfigError("E402", f"--label-key {label_key}: {problem}", "pass a column of categories, or omit it")
    choice = scores.choose_label(table.drop(columns=["id", "length"]), label_key)
    extra: dict[str, object] = {"label_key": choice.key, "label_source": choice.source, "label_note": choice.note,
                                "baseline": "none: sequence inputs have no counts to compare with"}  # fmt: skip
    if choice.key is not None and report.shape_ok and report.all_finite:
        rows = scores.sample_rows(plan.input.n_cells, plan.params.seed)
        labels = table[choice.key].to_numpy()[rows]
        keep = scores.scorable(labels)
        if len(set(labels[keep].astype(str))) >= scores.MIN_CATEGORIES:
            extra |= {
                "scored_cells": int(keep.sum()),
                "embedding_scores": scores.label_scores(embeddings[rows][keep], labels[keep], plan.params.seed),
            }
    report = report.model_copy(update=extra)
    write_json(plan.out_path / "quality.json", report)
    if manifest_file(plan).is_file():
        write_json(manifest_file(plan), load_manifest(plan).model_copy(update={"quality": report}))
    telemetry.emit_quality(plan, report)
    return report


def write_report(plan: Plan, manifest: Manifest | None = None) -> Path:
    from . import report as rep
    from .store import load_embeddings, load_manifest, write_text

    manifest = manifest or load_manifest(plan)
    embeddings = load_embeddings(plan)
    table = obs(plan)
    q = manifest.quality
    key = q.label_key if q and q.label_key in table.columns else None
    rng = np.random.default_rng(plan.params.seed)
    rows = np.sort(rng.choice(len(embeddings), min(rep.MAX_POINTS, len(embeddings)), replace=False))
    labels = table[key].astype(str).to_numpy()[rows] if key else None
    x = embeddings[rows].astype(np.float64)
    pictures = {
        "scatter": rep.scatter_picture([("PCA of the embeddings", rep.pca_2d(x))], labels, key),
        "qc": _length_picture(table["length"].to_numpy()),
        "timing": rep.timing_picture(manifest.shards, plan.input.unit),
    }
    seq = plan.input.sequence
    assert seq is not None
    qc = rep._table([
        ("records", f"{plan.input.n_cells:,} ({seq.format}{', gzip' if seq.compressed else ''})"),
        ("nucleotides", f"{seq.total_nucleotides:,} (lengths {seq.min_length:,}..{seq.max_length:,})"),
        ("alphabet", seq.alphabet),
        ("model context", f"{seq.context:,}; longer records: {seq.n_too_long} ({seq.too_long})"),
        ("soft-masked records (upper-cased)", str(seq.n_soft_masked)),
    ])  # fmt: skip
    out = plan.out_path / "report.html"
    write_text(out, rep.render(plan, manifest, pictures, qc, "UMAP left out for sequence inputs."))
    return out


def _length_picture(lengths: np.ndarray) -> str:
    from . import report as rep

    plt = rep._pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(lengths, bins=min(50, max(5, len(lengths) // 5)))
    ax.set_xlabel("record length (nucleotides)")
    ax.set_ylabel("records")
    return rep._png(fig)
