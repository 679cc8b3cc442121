"""report.html: one self-contained page (pictures inlined, nothing fetched) a biologist can read.

What ran, exactly as executed (device, precision, engine and batch size come from the shard records, not
from what was asked for); the quality gate with the label scores beside the PCA baseline; a UMAP and a PCA
of the embeddings coloured by the label column; the input's QC (counts and genes per cell, vocabulary
overlap); a per-shard timing chart; the manifest summary; and a FIXTURE banner for random-weight runs.

UMAP (umap-learn) costs ~15 s of numba compilation per process the first time; HELICAL_AIRFLOW_REPORT_UMAP=0
leaves it out (the page says so), e.g. in tests that do not look at it.
"""

from __future__ import annotations

import html
import logging
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from natsort import natsorted

from . import figures, h5io, modality, scores, settings
from .quality import load_qc
from .spec import Manifest, Plan, QualityReport, ShardResult
from .store import ShardedEmbeddings, load_manifest, write_text

log = logging.getLogger(__name__)

MAX_POINTS = 20000  # PCA picture: enough to see structure; keeps it quick for million-cell runs
MAX_UMAP_POINTS = 10000  # UMAP: a random sample above this (its cost grows faster than linear)
UMAP_ENV = "HELICAL_AIRFLOW_REPORT_UMAP"
MISSING_LABEL = "(no label)"
STYLE = (
    "<style>"
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}"
    "th{text-align:left;padding-right:1em}"
    "td,th{border-bottom:1px solid #ddd;padding:2px 6px;vertical-align:top}"
    "table{border-collapse:collapse;margin-bottom:1em}"
    ".fixture{background:#fee;border:2px solid #c00;padding:.6em;font-weight:bold}"
    ".pass{color:#080;font-weight:bold}"
    ".fail{color:#c00;font-weight:bold}"
    ".small{font-size:.85em;color:#555}"
    "img{max-width:100%}"
    "</style>"
)


def umap_enabled() -> bool:
    return settings.get().report_umap


def executed(shards: list[ShardResult]) -> dict[str, str]:
    """Device, precision, engine and batch size as the shards ran (several values: each with its shard count)."""

    def values(field: str) -> str:
        seen = Counter(str(getattr(s, field)) for s in shards if getattr(s, field, None) is not None)
        if not seen:
            return "not recorded"
        if len(seen) == 1:
            return next(iter(seen))
        return ", ".join(f"{value} ({n} shards)" for value, n in sorted(seen.items()))

    return {name: values(name) for name in ("device", "precision", "engine", "batch_size")}


def pca_2d(x: np.ndarray) -> np.ndarray:
    centered = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:2].T


def umap_2d(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap warns that a random_state disables its parallelism
        import umap

        reduced = PCA(n_components=min(50, x.shape[1], len(x) - 1), random_state=seed).fit_transform(x)
        neighbours = max(2, min(15, len(x) - 1))
        return np.asarray(umap.UMAP(n_neighbors=neighbours, random_state=seed).fit_transform(reduced))


def palette(n: int) -> list[str]:
    """n distinct colours: colorcet's glasbey (the first ten are matplotlib's tab10), 256 before it repeats."""
    import colorcet

    colours = list(colorcet.palette["glasbey_category10"])  # hex strings
    return [colours[i % len(colours)] for i in range(n)]


def natural_order(labels: list[str]) -> list[str]:
    named = natsorted(x for x in set(labels) if x != MISSING_LABEL)
    return named + ([MISSING_LABEL] if MISSING_LABEL in labels else [])


_png = figures.png  # the names the report's helpers had before figures.py
_pyplot = figures.pyplot
_table = figures.table


def legend_entries(labels: np.ndarray) -> list[tuple[str, str, int]]:
    """(category, colour, cells) in natural order (0, 1, 2, 10), unlabelled cells grey and last."""
    names = natural_order(list(labels))
    counts = Counter(labels)
    colours = palette(len(names))
    return [(n, "#bbbbbb" if n == MISSING_LABEL else c, counts[n]) for n, c in zip(names, colours, strict=True)]


def scatter_picture(panels: list[tuple[str, np.ndarray]], labels: np.ndarray | None, label_key: str | None) -> str:
    return _png(scatter_figure(panels, labels, label_key))


def scatter_figure(panels: list[tuple[str, np.ndarray]], labels: np.ndarray | None, label_key: str | None) -> Any:
    """Side-by-side scatters (UMAP, PCA) of the same cells, one legend outside the points, sorted naturally."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.2), dpi=90, squeeze=False)
    order = np.random.default_rng(0).permutation(len(panels[0][1]))  # no category drawn on top of all others
    handles = []
    if labels is not None:
        entries = legend_entries(labels)
        colours = {name: colour for name, colour, _ in entries}
        point_colours = np.array([colours[v] for v in labels])
        handles = [Line2D([], [], ls="", marker="o", ms=6, color=c, label=f"{n} ({k})") for n, c, k in entries]
    for ax, (title, coords) in zip(axes[0], panels, strict=True):
        colour = point_colours[order] if labels is not None else "#1f77b4"
        ax.scatter(coords[order, 0], coords[order, 1], s=max(1.0, min(8.0, 4000 / len(coords))), c=colour,
                   linewidths=0, rasterized=True)  # fmt: skip
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        axis = "UMAP" if title.startswith("UMAP") else "PC"
        ax.set_xlabel(f"{axis}1")
        ax.set_ylabel(f"{axis}2")
    if handles:
        columns = math.ceil(len(handles) / 26)
        fig.legend(handles=handles, title=label_key, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   title_fontsize=9, ncol=columns, frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig


def timing_picture(shards: list[ShardResult], unit: str = "cells") -> str:
    plt = _pyplot()
    ordered = sorted(shards, key=lambda s: s.index)
    index = [s.index for s in ordered]
    fig, ax = plt.subplots(figsize=(10, 3.0), dpi=90)
    ax.bar(index, [s.model_load_seconds for s in ordered], color="#dd8452", label="model load")
    ax.bar(index, [s.seconds for s in ordered], bottom=[s.model_load_seconds for s in ordered], color="#4c72b0",
           label="embedding")  # fmt: skip
    rate = ax.twinx()
    rate.plot(index, [s.cells / s.seconds if s.seconds else 0 for s in ordered], "o-", color="#55a868", ms=3)
    rate.set_ylabel(f"{unit} / s (green)")
    rate.set_ylim(bottom=0)
    ax.set_xlabel("shard")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.08, 1.0), frameon=False)
    if len(index) <= 40:
        ax.set_xticks(index)
    fig.tight_layout()
    return _png(fig)


def _img(alt: str, png_b64: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_b64}">'


def _quality_html(q: QualityReport | None, unit: str = "cells") -> str:
    if q is None:
        return "<p>quality gate not run yet</p>"
    verdict = "<p class='pass'>PASSED</p>" if q.passed else "<p class='fail'>FAILED</p>"
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in q.problems)
    checks = _table(
        [
            ("all finite", q.all_finite),
            (f"one row per {unit.removesuffix('s')}", q.shape_ok),
            (
                "mean pairwise cosine (collapsed above 0.999)",
                f"{q.mean_pairwise_cosine:.4f}" + _sampled(q.cosine_sample_cells, q.n_cells, unit),
            ),
            ("distinct embeddings", f"{q.distinct_fraction:.1%}" if q.distinct_fraction is not None else "n/a"),
            ("mean norm", f"{q.mean_norm:.4g}"),
        ]
    )
    label = f"<p>Label column: {html.escape(q.label_note or 'none')}</p>"
    scored = ""
    if q.embedding_scores and q.pca_scores:
        e, b = q.embedding_scores, q.pca_scores
        t = q.thresholds
        knn_t = ", ".join(
            x
            for x in (
                f"at least {t.min_knn_accuracy:.3f}" if t and t.min_knn_accuracy is not None else "",
                f"at most {t.max_knn_drop_vs_pca:.3f} below PCA" if t and t.max_knn_drop_vs_pca is not None else "",
            )
            if x
        )
        sil_t = ", ".join(
            x
            for x in (
                f"at least {t.min_silhouette:.3f}" if t and t.min_silhouette is not None else "",
                f"at most {t.max_silhouette_drop_vs_pca:.3f} below PCA"
                if t and t.max_silhouette_drop_vs_pca is not None
                else "",
            )
            if x
        )
        scored = (
            f"<table class='scores'><tr><th>score on obs[{html.escape(repr(q.label_key))}] ({q.scored_cells} {unit}"
            f"{_sampled(q.score_sample_cells, q.n_cells, unit)})"
            "</th><th>embeddings</th><th>PCA baseline</th><th>threshold</th></tr>"
            f"<tr><td>kNN label-transfer accuracy (5-fold, k=15)</td><td>{e.knn_accuracy:.3f}</td>"
            f"<td>{b.knn_accuracy:.3f}</td><td>{html.escape(knn_t or 'not checked')}</td></tr>"
            f"<tr><td>silhouette of the labels</td><td>{e.silhouette:.3f}</td><td>{b.silhouette:.3f}</td>"
            f"<td>{html.escape(sil_t or 'not checked')}</td></tr></table>"
            f"<p class='small'>Baseline: {html.escape(q.baseline or '')}. Thresholds: "
            f"{html.escape(q.thresholds_source or 'none')}.</p>"
        )
    return verdict + (f"<ul class='problems'>{problems}</ul>" if problems else "") + checks + label + scored


def _agreement_html(q: QualityReport | None, precision_ran: str, unit: str = "cells") -> str:
    """The fp16/bf16 run against fp32 on its sample (agreement.py), or why there is nothing to show."""
    a = q.precision_agreement if q else None
    if a is None:
        why = "the run ran in fp32" if precision_ran == "fp32" else "not measured (see run.log)"
        return f"<p id='precision-agreement'>Not applicable: {html.escape(why)}.</p>"
    t = a.thresholds

    def floor(value: float | None) -> str:
        return f"at least {value:g}" if value is not None else "not checked"

    verdict = "<span class='pass'>passed</span>" if a.passed else "<span class='fail'>FAILED</span>"
    rows = _table(
        [
            ("precision compared", f"{a.precision} (as run) vs {a.reference}, same process, same loaded model"),
            (f"{unit} compared", f"{a.sample_cells} (seeded sample, seed {a.sample_seed})"),
            ("per-row cosine, min", f"{a.cosine_min:.6f}, 1 - cosine {1 - a.cosine_min:.2g} "
             f"(threshold: {floor(t.min_cosine if t else None)})"),
            ("per-row cosine, median", f"{a.cosine_median:.6f}, 1 - cosine {1 - a.cosine_median:.2g}"),
            (f"kNN-neighbourhood overlap, mean (k={a.knn_k})",
             f"{a.knn_overlap:.4f} (threshold: {floor(t.min_knn_overlap if t else None)})"),
            ("kNN-neighbourhood overlap, min", f"{a.knn_overlap_min:.4f}"),
        ]
    )  # fmt: skip
    return (
        f"<div id='precision-agreement'><p>Agreement with fp32: {verdict}. Thresholds: "
        f"{html.escape(a.thresholds_source)}.</p>{rows}</div>"
    )


def _sampled(sample: int | None, total: int, unit: str) -> str:
    """Where a number comes from a seeded sample of the rows, how big it was."""
    return f" (seeded sample of {sample:,} of {total:,} {unit})" if sample is not None and sample < total else ""


def render(
    plan: Plan, manifest: Manifest, pictures: dict[str, str], qc_table: str, umap_note: str = "",
    qc_alt: str = "counts and genes per cell",
) -> str:  # fmt: skip
    q = manifest.quality
    banner = (
        f"<p class='fixture'>FIXTURE RUN: {html.escape(manifest.fixture_note or '')}</p>" if manifest.fixture else ""
    )
    unit = plan.input.unit  # "records" for a sequence input
    per_s = manifest.total_cells / manifest.total_shard_seconds if manifest.total_shard_seconds else 0.0
    ran = executed(manifest.shards)
    asked = manifest.params
    summary = _table(
        [
            ("dataset", plan.dataset),
            ("input", f"{plan.input.path} (sha256 {plan.input.sha256[:16]}...)"),
            ("model", f"{manifest.model} ({manifest.helical_model_name}){' FIXTURE' if manifest.fixture else ''}"),
            ("device (as run)", f"{ran['device']} (asked: {asked.device})"),
            ("precision (as run)", f"{ran['precision']} (asked: {asked.precision or 'profile default'})"),
            ("engine (as run)", ran["engine"]),
            ("batch size (as run)", ran["batch_size"]),
            (
                f"{unit} embedded",
                f"{manifest.total_cells:,} in {len(manifest.shards)} shards of up to {asked.shard_size}",
            ),
            ("embedding seconds (sum over shards)", f"{manifest.total_shard_seconds:,.2f}"),
            (f"{unit} per second", f"{per_s:,.1f}"),
            ("max peak RSS (MB)", f"{manifest.max_peak_rss_mb:,.0f}"),
            ("run key", manifest.run_key),
        ]
    )
    versions = ", ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items()))
    manifest_rows = _table(
        [
            ("created", manifest.created_at),
            ("weights checksum", manifest.weights_checksum),
            ("input sha256", manifest.input.sha256),
            ("embeddings", f"{manifest.outputs.get('embeddings')} (obsm[{manifest.outputs.get('obsm_key')!r}])"),
            ("hosts", manifest.host.get("shard_hosts", "")),
            ("platform", f"{manifest.host.get('platform', '')}, Python {manifest.host.get('python', '')}"),
            ("versions", versions),
        ]
    )
    shard_rows = "".join(
        f"<tr><td>{r.index}</td><td>{r.start}-{r.stop}</td><td>{r.seconds:.2f}</td><td>{r.model_load_seconds:.2f}</td>"
        f"<td>{r.cells / r.seconds if r.seconds else 0:.1f}</td><td>{r.peak_rss_mb:.0f}</td>"
        f"<td>{html.escape(r.device)}/{r.precision}/{r.engine}</td><td>{html.escape(r.host)}</td></tr>"
        for r in sorted(manifest.shards, key=lambda r: r.index)
    )
    title = f"helical-airflow: {html.escape(plan.dataset)}"
    made_by = (
        f"helical-airflow {html.escape(manifest.versions.get('helical-airflow', ''))} "
        f"with helical {html.escape(manifest.versions.get('helical', ''))}"
    )
    label_key = q.label_key if q else None
    colour_note = f"coloured by obs[{label_key!r}]" if label_key else "no label column to colour by"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
{STYLE}</head><body>
<h1>Embeddings of {html.escape(plan.dataset)} with {html.escape(manifest.model)}</h1>{banner}
<h2>Run (as executed)</h2>{summary}
<h2>Quality gate</h2>{_quality_html(q, unit)}
<h3>Reduced-precision agreement</h3>{_agreement_html(q, ran["precision"], unit)}
<h2>Embeddings</h2><p class="small">{html.escape(colour_note)}. {html.escape(umap_note)}</p>
<div id="scatter">{_img("UMAP and PCA of the embeddings", pictures["scatter"])}</div>
<h2>Input QC</h2>{qc_table}{_img(qc_alt, pictures["qc"])}
<h2>Shards</h2>{_img("seconds per shard", pictures["timing"])}
<table><tr><th>shard</th><th>rows</th><th>seconds</th><th>model load s</th><th>{unit}/s</th><th>peak RSS MB</th>
<th>device/precision/engine</th><th>host</th></tr>{shard_rows}</table>
<h2>Manifest</h2>{manifest_rows}
<p>Full provenance: <code>manifest.json</code>; scores: <code>quality.json</code>. Made by {made_by}.</p></body></html>
"""


def _labels(
    plan: Plan, q: QualityReport | None, rows: np.ndarray, kind: modality.Modality
) -> tuple[np.ndarray | None, str | None]:
    if q is not None and q.label_key is None:  # the gate guessed from the same columns and found none
        return None, None
    key = q.label_key if q is not None else None
    values = None
    if key is not None and kind.name == "cells":  # the gate's column, only the pictured rows
        values = h5io.read_obs_column_rows(plan.input.path, key, rows)
    if values is None:  # no gate result, or not an .h5ad: the whole table (the gate's choice, else a guess)
        obs = kind.metadata(plan.input)
        key = (
            q.label_key if q and q.label_key in obs.columns else scores.choose_label(kind.label_columns(obs), None).key
        )
        if key is None:
            return None, None
        values = obs[key].to_numpy()[rows]
    return np.where(pd.notna(values), values.astype(str), MISSING_LABEL), key


def write_report(plan: Plan, manifest: Manifest | None = None) -> Path:
    kind = modality.of(plan.input)
    manifest = manifest or load_manifest(plan)
    embeddings = ShardedEmbeddings(plan)  # on disk: only the pictured rows are read
    with_umap = kind.umap and umap_enabled() and len(embeddings) > 3
    limit = MAX_UMAP_POINTS if with_umap else MAX_POINTS  # both panels show the same rows
    rng = np.random.default_rng(plan.params.seed)
    rows = np.sort(rng.choice(len(embeddings), min(limit, len(embeddings)), replace=False))
    labels, key = _labels(plan, manifest.quality, rows, kind)
    x = embeddings[rows].astype(np.float64)
    note = f"A random {len(rows):,} of the {len(embeddings):,} {kind.unit}." if len(rows) < len(embeddings) else ""
    panels = []
    if with_umap:
        try:
            panels.append(("UMAP of the embeddings", umap_2d(x, plan.params.seed)))
        except Exception as exc:  # the report must still be written; it says why the UMAP is missing
            log.warning("UMAP failed, the report shows PCA only: %s", exc)
            note += f" UMAP failed ({type(exc).__name__}: {exc}); PCA only."
    elif not kind.umap:
        note += f" {kind.no_umap_note}"
    elif not umap_enabled():
        note += f" UMAP left out ({UMAP_ENV}=0)."
    panels.append(("PCA of the embeddings", pca_2d(x)))
    qc = kind.qc_section(plan, load_qc(plan))
    pictures = {
        "scatter": scatter_picture(panels, labels, key),
        "qc": qc.picture,
        "timing": timing_picture(manifest.shards, kind.unit),
    }
    out = plan.out_path / "report.html"
    write_text(out, render(plan, manifest, pictures, qc.table, note.strip(), qc.alt))
    return out
