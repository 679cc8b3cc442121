"""monitoring/statsd/mapping.yml against real Airflow 3 StatsD traffic, Airflow's own metric registry and
the runner's telemetry: every name is mapped to labelled metrics or dropped on purpose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helical_airflow import telemetry
from helical_airflow.plan import resolve_params
from helical_airflow.spec import InputSummary, Plan, RunParams, ShardResult
from helical_airflow.statsd_bridge.check import classify, read_lines, summary
from helical_airflow.statsd_bridge.lines import parse_line
from helical_airflow.statsd_bridge.mapping import Mapper

REPO = Path(__file__).resolve().parents[2]
MAPPING = REPO / "monitoring" / "statsd" / "mapping.yml"
CAPTURE = REPO / "tests" / "data" / "airflow_statsd_capture.txt"
TYPES = {"counter": "counter", "gauge": "gauge", "timer": "observer"}
# `{job_name}` is a class name, not an id: Airflow 3 sends job_start / job_end / job_heartbeat_failure.
SAMPLE_VALUES = {"job_name": "job"}


@pytest.fixture(scope="module")
def mapper() -> Mapper:
    return Mapper.from_file(MAPPING)


def test_every_captured_airflow_name_is_mapped_or_dropped(mapper: Mapper) -> None:
    outcomes = classify(mapper, read_lines([CAPTURE])).values()
    counts = summary(outcomes)
    print(f"\ncaptured Airflow StatsD names: {len(outcomes)} distinct, {counts}")
    unmapped = sorted(o.name for o in outcomes if o.action == "unmapped")
    assert unmapped == [], f"names no rule of mapping.yml handles: {unmapped}"
    assert counts["map"] > 0 and counts["drop"] > 0


def _legacy_components(template: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", template)


def _airflow_registry() -> list[dict]:
    airflow = pytest.importorskip("airflow")
    path = Path(airflow.__file__).parent / "_shared" / "observability" / "metrics" / "metrics_template.yaml"
    if not path.is_file():
        pytest.skip(f"this Airflow has no metrics registry at {path}")
    return yaml.safe_load(path.read_text())["metrics"]


def test_every_name_with_an_id_in_airflows_registry_is_mapped_or_dropped(mapper: Mapper) -> None:
    """Names Airflow can send with a DAG, task, pool, ... baked in (its legacy names, and new names with a
    variable), filled with sample values: none may reach Prometheus unmapped, with the id in its name."""
    checked, outcomes = 0, {"map": 0, "drop": 0}
    problems = []
    for metric in _airflow_registry():
        templates = [metric["name"]] + ([metric["legacy_name"]] if metric.get("legacy_name", "-") != "-" else [])
        for template in templates:
            variables = _legacy_components(template)
            if not variables:
                continue
            name = "airflow." + template.format(**{v: SAMPLE_VALUES.get(v, f"sample_{v}") for v in variables})
            match = mapper.lookup(name, TYPES[metric["type"]])
            checked += 1
            if match is None:
                problems.append(name)
            else:
                outcomes["drop" if match.dropped else "map"] += 1
    print(f"\nregistry names with ids: {checked} checked, {outcomes}")
    assert checked > 20
    assert problems == [], f"would reach Prometheus unmapped, ids in the name: {problems}"


def test_tagless_duplicates_of_labelled_legacy_names_are_dropped(mapper: Mapper) -> None:
    """With plain StatsD Airflow sends `ti.finish` AND `ti.finish.<dag>.<task>.<state>`; keeping both
    would double-count, so the tagless one must be dropped whenever the legacy one is mapped."""
    for metric in _airflow_registry():
        legacy = metric.get("legacy_name", "-")
        if legacy == "-" or "{" in metric["name"]:
            continue
        sample = "airflow." + legacy.format(**{v: f"x{i}" for i, v in enumerate(_legacy_components(legacy))})
        mapped = mapper.lookup(sample, TYPES[metric["type"]])
        if mapped is None or mapped.dropped:
            continue
        tagless = mapper.lookup("airflow." + metric["name"], TYPES[metric["type"]])
        assert tagless is not None and tagless.dropped, f"airflow.{metric['name']} is kept next to {sample}"


def test_captured_ids_become_labels(mapper: Mapper) -> None:
    """The ids in each captured legacy name come back as labels, for every such line of the capture."""
    patterns = {
        r"airflow\.ti\.finish\.([^.]+)\.([^.]+)\.([^.]+)": ("airflow_ti_finish_total", ["dag_id", "task_id", "state"]),
        r"airflow\.dag\.([^.]+)\.([^.]+)\.duration": ("airflow_task_duration_seconds", ["dag_id", "task_id"]),
        r"airflow\.dagrun\.duration\.([^.]+)\.([^.]+)": ("airflow_dagrun_duration_seconds", ["state", "dag_id"]),
        r"airflow\.pool\.open_slots\.([^.]+)": ("airflow_pool_open_slots", ["pool"]),
        r"airflow\.executor\.open_slots\.([^.]+)": ("airflow_executor_open_slots", ["executor"]),
    }
    seen = dict.fromkeys(patterns, 0)
    for line in read_lines([CAPTURE]):
        (event,), _ = parse_line(line)
        for pattern, (metric, label_names) in patterns.items():
            m = re.fullmatch(pattern, event.name)
            if m:
                match = mapper.lookup(event.name, event.type)
                assert match is not None and match.name == metric
                assert match.labels == dict(zip(label_names, m.groups(), strict=True))
                seen[pattern] += 1
    assert all(seen.values()), f"the capture lacks some core metrics: {seen}"


def test_a_metric_name_always_has_the_same_label_names(mapper: Mapper) -> None:
    """statsd_exporter refuses a sample whose label names differ from the first one's for that metric."""
    label_sets: dict[str, set[frozenset[str]]] = {}
    for outcome in classify(mapper, read_lines([CAPTURE])).values():
        if outcome.action == "map":
            label_sets.setdefault(outcome.metric, set()).add(frozenset(k for k, _ in outcome.labels))
    assert {name: sets for name, sets in label_sets.items() if len(sets) > 1} == {}


def _plan(model: str = "gf-6L-10M-i2048", dataset: str = "pbmc.v2 (raw)") -> Plan:
    summary_ = InputSummary(
        path="/data/x.h5ad", sha256="0" * 64, size_bytes=1, n_cells=10, n_genes=5, x_source="X", x_format="csr",
        dtype="int32", gene_id_kind="symbol", genes_in_vocab=5, vocab_overlap=1.0,
    )  # fmt: skip
    return Plan(
        run_key="3f9a0c1d2e4b5a67", dataset=dataset, out_dir="/tmp/out", input=summary_,
        params=resolve_params(RunParams(model=model, precision="fp32", batch_size=8, engine="helical")),
        model_family="geneformer",
        helical_model_name=model, fixture=True, weights_checksum="w", code_version="c", shards=[], created_at="now",
    )  # fmt: skip


def _result(**kw: object) -> ShardResult:
    values: dict = dict(
        index=0, start=0, stop=500, cells=500, embedding_dim=256, seconds=12.5, model_load_seconds=3.25,
        peak_rss_mb=1536.0, peak_gpu_mb=None, device="cpu", precision="fp32", engine="helical", host="h",
        finished_at="now",
    )  # fmt: skip
    values.update(kw)
    return ShardResult(**values)


def _mapped(mapper: Mapper, lines: list[str]) -> dict[str, tuple[dict[str, str], float]]:
    out = {}
    for line in lines:
        (event,), errors = parse_line(line)
        assert errors == []
        match = mapper.lookup(event.name, event.type)
        assert match is not None and not match.dropped, f"runner line not mapped: {line}"
        out[match.name] = (match.labels, event.value)
    return out


def test_runner_shard_metrics_are_mapped_with_model_and_run_labels(mapper: Mapper) -> None:
    plan, result = _plan(), _result(device="cuda", peak_gpu_mb=2048.0)
    mapped = _mapped(mapper, telemetry.shard_lines(plan, result))
    labels = {"model": plan.params.model, "device": "cuda", "dataset": "pbmc_v2__raw_", "run_key": plan.run_key}
    assert {name: lab for name, (lab, _) in mapped.items()} == dict.fromkeys(
        [
            "helical_embed_cells_total", "helical_embed_shards_total", "helical_embed_shard_duration_seconds",
            "helical_embed_peak_rss_bytes", "helical_embed_cells_per_second", "helical_embed_peak_gpu_bytes",
            "helical_embed_model_load_duration_seconds", "helical_embed_memory_cap_bytes",
        ],
        labels,
    )  # fmt: skip
    values = {name: value for name, (_, value) in mapped.items()}
    assert values["helical_embed_cells_total"] == result.cells
    assert values["helical_embed_cells_per_second"] == pytest.approx(result.cells / result.seconds)
    assert values["helical_embed_shard_duration_seconds"] == pytest.approx(result.seconds)  # ms -> s
    assert values["helical_embed_model_load_duration_seconds"] == pytest.approx(result.model_load_seconds)
    assert values["helical_embed_peak_rss_bytes"] == result.peak_rss_mb * 2**20
    assert values["helical_embed_peak_gpu_bytes"] == 2048.0 * 2**20


def test_cpu_shard_sends_no_gpu_memory_and_reused_model_no_load_time(mapper: Mapper) -> None:
    mapped = _mapped(mapper, telemetry.shard_lines(_plan(), _result(model_load_seconds=0.0)))
    assert "helical_embed_peak_gpu_bytes" not in mapped
    assert "helical_embed_model_load_duration_seconds" not in mapped
    assert mapped["helical_embed_cells_total"][0]["device"] == "cpu"


def test_runner_failures_are_mapped_by_error_code(mapper: Mapper) -> None:
    plan = _plan()
    mapped = _mapped(mapper, telemetry.failure_lines(plan, "E303"))
    assert mapped == {
        "helical_embed_failures_total": (
            {"code": "E303", "model": plan.params.model, "dataset": "pbmc_v2__raw_", "run_key": plan.run_key},
            1.0,
        )
    }


def _sequence_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    """A plan over a real 3-record FASTA (its record index gives the nucleotides per shard)."""
    from helical_airflow.validate import validate_input

    monkeypatch.setenv("HELICAL_AIRFLOW_SEQ_INDEX_DIR", str(tmp_path / "index"))
    fasta = tmp_path / "three.fa"
    fasta.write_text(">a\n" + "ACGT" * 25 + "\n>b\n" + "A" * 250 + "\n>c\n" + "CGTA" * 10 + "\n")
    summary_ = validate_input(str(fasta), "hyena_dna", None, None, options={})
    return _plan("hyena_dna", "three.fa").model_copy(update={"input": summary_, "model_family": "hyena_dna"})


def test_sequence_shards_also_send_records_and_nucleotides(
    mapper: Mapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _sequence_plan(tmp_path, monkeypatch)
    result = _result(start=0, stop=2, cells=2, seconds=0.5)  # records a and b: 100 + 250 nucleotides
    mapped = _mapped(mapper, telemetry.shard_lines(plan, result))
    labels = {"model": "hyena_dna", "device": "cpu", "dataset": "three_fa", "run_key": plan.run_key}
    for name in ("helical_embed_sequences_total", "helical_embed_nucleotides_total",
                 "helical_embed_nucleotides_per_second", "helical_embed_cells_total"):  # fmt: skip
        assert mapped[name][0] == labels, name
    assert mapped["helical_embed_sequences_total"][1] == 2
    assert mapped["helical_embed_nucleotides_total"][1] == 350
    assert mapped["helical_embed_nucleotides_per_second"][1] == pytest.approx(700)
    # a single-cell shard sends none of them
    cells = _mapped(mapper, telemetry.shard_lines(_plan(), _result()))
    assert not {"helical_embed_sequences_total", "helical_embed_nucleotides_total",
                "helical_embed_nucleotides_per_second"} & set(cells)  # fmt: skip
