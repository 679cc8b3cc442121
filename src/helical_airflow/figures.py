"""The pieces of report.html that the report and each modality's QC section share: an HTML table, and a matplotlib
figure as inline PNG. matplotlib is imported only when a picture is drawn (it is heavy; the DAG processor imports
report.py through airflow_tasks and never draws)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np


def table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def confusion(matrix: Any, rows: list[str], cols: list[str], ylabel: str, xlabel: str = "predicted") -> str:
    """A confusion matrix as PNG (base64): counts written in the cells, shaded by their share of the row."""
    plt = pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(cols), 1.0 + 0.45 * len(rows)), dpi=90)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if counts[i, j]:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of the row")
    fig.tight_layout()
    return png(fig)


def per_class_table(rows: dict[str, tuple[float, float, float, int]]) -> str:
    """class -> (precision, recall, F1, cells) as an HTML table."""
    head = "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>cells</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{p:.3f}</td><td>{r:.3f}</td><td>{f:.3f}</td><td>{n}</td></tr>"
        for k, (p, r, f, n) in rows.items()
    )
    return f"<table>{head}{body}</table>"


def img(alt: str, b64: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'
