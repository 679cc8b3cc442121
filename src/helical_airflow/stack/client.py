"""A small client for Airflow 3's REST API (`/api/v2`, JWT from `/auth/token`): trigger a DAG, wait, inspect.

Used by the end-to-end test, the overhead benchmark and `docs/airflow.md`'s examples.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from .errors import StackError

FINISHED = {"success", "failed"}


class AirflowClient:
    def __init__(self, api_url: str, username: str, password: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.username = username
        self.password = password
        self._token: str | None = None

    def _call(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (our own API URL)
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:4000]
            raise StackError(
                "E520", f"{method} {path} -> HTTP {exc.code}: {detail}", "check the request and the stack's logs"
            ) from None
        except urllib.error.URLError as exc:
            raise StackError(
                "E521", f"cannot reach Airflow at {self.api_url}: {exc.reason}", "start it: helical-airflow stack up"
            ) from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        if self._token is None:
            body = {"username": self.username, "password": self.password}
            self._token = self._call("POST", "/auth/token", body, auth=False)["access_token"]
        return self._token

    def get(self, path: str) -> Any:
        return self._call("GET", "/api/v2" + path)

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", "/api/v2" + path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._call("PATCH", "/api/v2" + path, body)

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180) -> dict[str, Any]:
        """Wait until the DAG processor has parsed the DAG (a fresh stack needs a few seconds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.get(f"/dags/{dag_id}")
            except StackError as exc:
                if "HTTP 404" not in exc.message or time.monotonic() > deadline:
                    raise
            time.sleep(2)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run = self.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 900, poll_s: float = 2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise StackError("E522", f"run {run_id} still {run['state']} after {timeout_s:.0f}s", "see the UI")
            time.sleep(poll_s)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return body["task_instances"]
