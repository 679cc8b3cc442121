"""The pieces of report.html that the report and each modality's QC section share: an HTML table, and a matplotlib
figure as inline PNG. matplotlib is imported only when a picture is drawn (it is heavy; the DAG processor imports
report.py through airflow_tasks and never draws)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any


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
