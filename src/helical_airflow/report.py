"""report.html: what ran, how long it took, the quality numbers, and a PCA picture of the embeddings."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from . import h5io
from .spec import Manifest, Plan
from .store import load_embeddings, load_manifest, write_text

MAX_POINTS = 20000  # enough to see structure; keeps the picture quick for million-cell runs
COLOR_COLUMNS = ("cell_type", "celltype", "cell_types", "louvain", "leiden")


def pca_2d(x: np.ndarray) -> np.ndarray:
    centered = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:2].T


def _picture(plan: Plan, embeddings: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(plan.params.seed)
    rows = np.sort(rng.choice(len(embeddings), min(MAX_POINTS, len(embeddings)), replace=False))
    coords = pca_2d(embeddings[rows].astype(np.float64))
    obs = h5io.read_obs(plan.input.path)
    label = next((c for c in COLOR_COLUMNS if c in obs.columns), None)
    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=90)
    if label:
        labels = obs[label].astype(str).to_numpy()[rows]
        for name in sorted(set(labels)):
            hit = labels == name
            ax.scatter(coords[hit, 0], coords[hit, 1], s=4, label=name)
        ax.legend(fontsize=6, markerscale=3, loc="best", title=label)
    else:
        ax.scatter(coords[:, 0], coords[:, 1], s=4)
    ax.set(xlabel="PC1", ylabel="PC2", title=f"{plan.dataset}: {plan.params.model} embeddings (PCA)")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def render(plan: Plan, manifest: Manifest, picture_png_b64: str) -> str:
    q = manifest.quality
    banner = (
        f"<p class='fixture'>FIXTURE RUN: {html.escape(manifest.fixture_note or '')}</p>" if manifest.fixture else ""
    )
    cells_per_s = manifest.total_cells / manifest.total_shard_seconds if manifest.total_shard_seconds else 0.0
    summary = _table(
        [
            ("dataset", plan.dataset),
            ("input", f"{plan.input.path} (sha256 {plan.input.sha256[:16]}...)"),
            ("cells x genes", f"{plan.input.n_cells} x {plan.input.n_genes}"),
            ("genes in model vocabulary", f"{plan.input.genes_in_vocab} ({plan.input.vocab_overlap:.1%})"),
            ("model", f"{manifest.model} ({manifest.helical_model_name})"),
            (
                "engine / device / precision",
                f"{plan.params.engine} / {manifest.host.get('devices')} / {plan.params.precision}",
            ),
            ("run key", manifest.run_key),
            ("shards", len(manifest.shards)),
            ("embedding seconds (sum over shards)", manifest.total_shard_seconds),
            ("cells per second", f"{cells_per_s:.1f}"),
            ("max peak RSS (MB)", manifest.max_peak_rss_mb),
        ]
    )
    quality = (
        _table(
            [
                ("passed", q.passed),
                ("all finite", q.all_finite),
                ("shape ok", q.shape_ok),
                ("mean norm", f"{q.mean_norm:.4g}"),
                ("mean pairwise cosine", f"{q.mean_pairwise_cosine:.4f}"),
                ("problems", "; ".join(q.problems) or "none"),
            ]
        )
        if q
        else "<p>quality gate not run yet</p>"
    )
    shard_rows = "".join(
        f"<tr><td>{r.index}</td><td>{r.start}-{r.stop}</td><td>{r.seconds:.2f}</td>"
        f"<td>{r.cells / r.seconds if r.seconds else 0:.1f}</td><td>{r.peak_rss_mb:.0f}</td><td>{r.host}</td></tr>"
        for r in manifest.shards
    )
    title = f"helical-airflow: {html.escape(plan.dataset)}"
    made_by = (
        f"helical-airflow {html.escape(manifest.versions.get('helical-airflow', ''))} "
        f"with helical {html.escape(manifest.versions.get('helical', ''))}"
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:2em auto}}th{{text-align:left;padding-right:1em}}
td,th{{border-bottom:1px solid #ddd;padding:2px 6px}}table{{border-collapse:collapse;margin-bottom:1em}}
.fixture{{background:#fee;border:2px solid #c00;padding:.6em;font-weight:bold}}</style></head><body>
<h1>Embeddings of {html.escape(plan.dataset)} with {html.escape(manifest.model)}</h1>{banner}
<h2>Run</h2>{summary}<h2>Quality gate</h2>{quality}
<h2>Embeddings</h2><img alt="PCA of the embeddings" src="data:image/png;base64,{picture_png_b64}">
<h2>Shards</h2><table><tr><th>shard</th><th>rows</th><th>seconds</th><th>cells/s</th><th>peak RSS MB</th>
<th>host</th></tr>{shard_rows}</table>
<p>Full provenance: <code>manifest.json</code>. Made by {made_by}.</p></body></html>
"""


def write_report(plan: Plan, manifest: Manifest | None = None) -> Path:
    manifest = manifest or load_manifest(plan)
    out = plan.out_path / "report.html"
    write_text(out, render(plan, manifest, _picture(plan, load_embeddings(plan))))
    return out
