"""telemetry.py: off by default, sends one datagram per shard to HELICAL_AIRFLOW_STATSD_HOST/PORT, never
fails a shard over metrics."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_statsd_mapping import _plan, _result, _sequence_plan  # same folder: pytest puts it on sys.path

from helical_airflow import telemetry


@pytest.fixture
def udp_server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_off_unless_the_host_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(telemetry.HOST_ENV, raising=False)
    assert telemetry.target() is None
    assert telemetry.send(["x:1|c"]) is False


def test_port_defaults_to_statsd_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(telemetry.HOST_ENV, "statsd-exporter")
    monkeypatch.delenv(telemetry.PORT_ENV, raising=False)
    assert telemetry.target() == ("statsd-exporter", 9125)


def test_emit_shard_and_failure_reach_the_configured_udp_port(
    monkeypatch: pytest.MonkeyPatch, udp_server: socket.socket
) -> None:
    monkeypatch.setenv(telemetry.HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(telemetry.PORT_ENV, str(udp_server.getsockname()[1]))
    plan, result = _plan(), _result()
    telemetry.emit_shard(plan, result)
    received = udp_server.recvfrom(65535)[0].decode().splitlines()
    assert received == telemetry.shard_lines(plan, result)
    assert f"helical.shard.cells.{plan.params.model}.cpu.pbmc_v2__raw_.{plan.run_key}:{result.cells}|c" in received
    telemetry.emit_failure(plan, "E301")
    assert (
        udp_server.recvfrom(65535)[0].decode()
        == f"helical.failure.E301.{plan.params.model}.pbmc_v2__raw_.{plan.run_key}:1|c"
    )


def test_gauge_values_never_carry_a_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    """In StatsD `+n` / `-n` on a gauge means "change by n": absolute values must be bare numbers."""
    lines = telemetry.shard_lines(_plan(), _result(seconds=0.333, cells=7, peak_rss_mb=0.5))
    for line in lines:
        value = line.split(":", 1)[1].split("|")[0]
        assert value[0].isdigit() and float(value) >= 0, line


def test_bad_settings_or_unknown_host_are_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv(telemetry.HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(telemetry.PORT_ENV, "statsd")
    telemetry.emit_failure(_plan(), "E301")
    assert "E604" in caplog.text and telemetry.PORT_ENV in caplog.text
    caplog.clear()
    monkeypatch.setenv(telemetry.HOST_ENV, "no-such-host.invalid")
    monkeypatch.setenv(telemetry.PORT_ENV, "9125")
    telemetry.emit_shard(_plan(), _result())
    assert "not sent" in caplog.text


def test_a_sequence_shard_reaches_the_udp_port_with_records_and_nucleotides(
    monkeypatch: pytest.MonkeyPatch, udp_server: socket.socket, tmp_path: Path
) -> None:
    monkeypatch.setenv(telemetry.HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(telemetry.PORT_ENV, str(udp_server.getsockname()[1]))
    plan = _sequence_plan(tmp_path, monkeypatch)
    result = _result(start=1, stop=3, cells=2, seconds=2.0)  # records b and c: 250 + 40 nucleotides
    telemetry.emit_shard(plan, result)
    received = udp_server.recvfrom(65535)[0].decode().splitlines()
    tail = f"hyena_dna.cpu.three_fa.{plan.run_key}"
    for line in (f"helical.shard.sequences.{tail}:2|c", f"helical.shard.nucleotides.{tail}:290|c",
                 f"helical.shard.nucleotides_per_second.{tail}:145|g"):  # fmt: skip
        assert line in received, received


def test_fine_tuning_epoch_gauges_are_mapped_and_a_nan_loss_is_left_out() -> None:
    """Every epoch gauge becomes a helical_finetune_* series with the training's labels; a NaN (an epoch without a
    training batch) is not sent: StatsD has no way to write it, and `nan|g` would be dropped by the exporter."""
    from helical_airflow.finetune_spec import EpochMetrics
    from helical_airflow.statsd_bridge.mapping import Mapper

    mapper = Mapper.from_file(Path(__file__).resolve().parents[2] / "monitoring" / "statsd" / "mapping.yml")
    metrics = EpochMetrics(epoch=3, train_loss=float("nan"), val_loss=0.7, val_accuracy=0.5, val_macro_f1=0.25,
                           seconds=2.5, train_cells_per_second=48.0)  # fmt: skip
    lines = telemetry.epoch_lines("gf-6L-10M-i2048", "pbmc.v2", "cell type", "k1", metrics, 1)
    found = {}
    for line in lines:
        name, value = line.split("|")[0].split(":")
        match = mapper.lookup(name, "gauge")
        assert match is not None, line
        assert match.labels == {"model": "gf-6L-10M-i2048", "dataset": "pbmc_v2", "label_key": "cell_type",
                                "finetune_key": "k1"}  # fmt: skip
        found[match.name] = float(value)
    assert "helical_finetune_train_loss" not in found
    assert found == {"helical_finetune_epoch": 3, "helical_finetune_epoch_seconds": 2.5,
                     "helical_finetune_train_cells_per_second": 48, "helical_finetune_val_loss": 0.7,
                     "helical_finetune_val_accuracy": 0.5, "helical_finetune_val_macro_f1": 0.25,
                     "helical_finetune_epochs_since_best": 1}  # fmt: skip
    (failure,) = telemetry.finetune_failure_lines("E803", "gf", "pbmc", "cell_type")
    match = mapper.lookup(failure.split(":")[0], "counter")
    assert match is not None and match.name == "helical_finetune_failures_total" and match.labels["code"] == "E803"
