"""Ask a Prometheus every query the project relies on: each dashboard panel and variable, each alert and
recording rule, each ```promql block of docs/observability.md.

    python monitoring/check_queries.py --prometheus http://127.0.0.1:28090

Prints one line per query (series returned, or the error), then the counts. Exit 1 when a query does not
parse, or a documented query returns nothing (the docs promise data after one DAG run).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parent
DOCS = MONITORING.parent / "docs" / "observability.md"
# What Grafana substitutes ($dag/$task/$model as "All"); rate windows of 4 scrape intervals.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$dag": ".*", "$task": ".*",
                     "$model": ".*"}  # fmt: skip


@dataclass(frozen=True)
class Query:
    where: str  # e.g. "helical-airflow.json: Cells/s per model" or "rule AirflowDagFailureRate"
    expr: str
    instant: bool = True
    documented: bool = False  # from the docs: must return data


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    for name, value in (variables or GRAFANA_VARIABLES).items():
        expr = expr.replace(name, value)
    return expr


def dashboard_queries(variables: dict[str, str] | None = None) -> list[Query]:
    out = []
    for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("type") == "loki":
                    continue  # LogQL, for Loki (tests/unit/test_dashboards.py checks its labels)
                expr = substitute(target["expr"], variables)
                out.append(Query(f"{path.name}: {panel['title']}", expr, bool(target.get("instant"))))
        for var in dashboard.get("templating", {}).get("list", []):
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", var.get("query", ""))
            if selector:  # Grafana asks for the series of the selector
                out.append(Query(f"{path.name}: variable ${var['name']}", substitute(selector.group(1), variables)))
    return out


def rule_queries() -> list[Query]:
    out = []
    for path in sorted((MONITORING / "rules").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [Query(f"{path.name}: {r.get('alert') or r['record']}", r["expr"]) for r in group["rules"]]
    return out


def docs_queries() -> list[Query]:
    blocks = re.findall(r"```promql\n(.*?)```", DOCS.read_text(), re.S)
    return [Query("docs/observability.md", q.strip(), documented=True)
            for block in blocks for q in block.strip().split("\n\n") if q.strip()]  # fmt: skip


def all_queries(variables: dict[str, str] | None = None) -> list[Query]:
    return dashboard_queries(variables) + rule_queries() + docs_queries()


class Prometheus:
    def __init__(self, url: str, window_s: float = 900) -> None:
        self.url = url.rstrip("/")
        self.window_s = window_s  # range queries look this far back, like a dashboard's time range

    def api(self, path: str, **params: object) -> dict:
        """`data` of a successful API answer; raises ValueError with Prometheus' error otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (the user's Prometheus)
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]  # type: ignore[no-any-return]

    def run(self, query: Query) -> list[dict]:
        if query.instant:
            return self.api("query", query=query.expr)["result"]  # type: ignore[no-any-return]
        end = time.time()
        step = max(1, int(self.window_s / 300))
        return self.api("query_range", query=query.expr, start=end - self.window_s, end=end, step=step)["result"]  # type: ignore[no-any-return]


def check(prometheus: Prometheus, queries: list[Query]) -> tuple[list[str], list[str], int]:
    """(errors, documented queries without data, queries with data)."""
    errors, empty, with_data = [], [], 0
    for q in queries:
        try:
            result = prometheus.run(q)
        except ValueError as exc:
            errors.append(f"{q.where}: {q.expr}\n    {exc}")
            print(f"ERROR  {q.where}: {exc}")
            continue
        with_data += bool(result)
        if q.documented and not result:
            empty.append(q.expr)
        print(f"{len(result):5}  {q.where}: {q.expr[:100]}")
    return errors, empty, with_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:28090", help="base URL (local stack: :28090)")
    args = parser.parse_args(argv)
    queries = all_queries()
    errors, empty, with_data = check(Prometheus(args.prometheus), queries)
    print(f"\n{len(queries)} queries: {len(errors)} errors, {with_data} returned series, "
          f"{len(empty)} documented queries without data")  # fmt: skip
    for line in errors + [f"no data: {q}" for q in empty]:
        print(line, file=sys.stderr)
    return 1 if errors or empty else 0


if __name__ == "__main__":
    sys.exit(main())
