"""A fine-tuned model in the MLflow Model Registry of a real `mlflow server` (SQLite backend, served artifacts):
a server that is down loses nothing (the folder is complete, registry.json says unregistered) and the same
command registers it later; versions and the `champion` alias; `models:/NAME@ALIAS` loads and predicts; a name
that does not exist is E804."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from helical_airflow import finetune_registry
from helical_airflow.annotate import ANNOTATIONS
from helical_airflow.annotate_finetuned import annotate_with_classifier
from helical_airflow.errors import ConfigError
from helical_airflow.finetune import REGISTRY_FILE, FineTuneParams, finetune, load_classifier
from helical_airflow.finetune_registry import ALIAS, registered_name
from helical_airflow.spec import RunParams

pytest.importorskip("mlflow", reason="the MLflow client comes with the tracking extra: ./setup_helical_env.sh")
from stack_helpers import free_ports, real_mlflow_server  # noqa: E402  (tests/stack_helpers.py)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with real_mlflow_server(tmp_path_factory) as uri:
        yield uri


def test_register_after_a_down_server_then_serve_the_champion(
    mlflow_server: str, sample_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    params = FineTuneParams(model="geneformer", label_key="cell_type", device="cpu", cache_dir=fixture_cache,
                            epochs=1, max_train_cells=12, validation_fraction=0.3, shard_size=350)  # fmt: skip
    down = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    first = finetune(sample_h5ad, params, tmp_path / "out", tracking_uri=down)
    assert first.registration is not None and first.registration["status"] == "unregistered"
    assert "not reachable" in first.registration["error"]
    assert json.loads((first.folder / REGISTRY_FILE).read_text())["status"] == "unregistered"
    assert (first.folder / "model.pt").is_file()

    again = finetune(sample_h5ad, params, tmp_path / "out", tracking_uri=mlflow_server)  # no training: registers
    assert again.folder == first.folder and again.result.created_at == first.result.created_at
    reg = again.registration
    assert reg is not None and reg["status"] == "registered", reg
    name = registered_name("geneformer", "cell_type")
    assert reg["name"] == name == "helical-geneformer-cell_type" and reg["version"] == "1" and reg["alias"] == ALIAS

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    run = client.get_run(reg["mlflow_run_id"])
    assert run.data.params["input_run_key"] == first.result.input_run_key
    assert run.data.params["weights_checksum"] == first.result.weights_checksum
    assert "val_macro_f1" in run.data.metrics and "train_loss" in run.data.metrics
    assert {a.path for a in client.list_artifacts(reg["mlflow_run_id"], "model")} >= {
        "model/model.pt",
        "model/finetune.json",
        "model/split.json",
    }
    third = finetune(sample_h5ad, params, tmp_path / "out", tracking_uri=mlflow_server)  # registered once only
    assert third.registration == reg

    other = finetune(sample_h5ad, params.model_copy(update={"seed": 1}), tmp_path / "out", tracking_uri=mlflow_server)
    assert other.registration is not None and other.registration["version"] == "2"
    champion = client.get_model_version_by_alias(name, ALIAS)
    better = other.result.best.val_macro_f1 >= first.result.best.val_macro_f1
    assert champion.version == ("2" if better else "1")

    classifier = load_classifier(f"models:/{name}@{ALIAS}", cache_dir=fixture_cache, tracking_uri=mlflow_server)
    expected = (other if better else first).result.finetune_key
    # an alias pinned to the version it names now (what a DAG run hands its tasks); a bare name is the champion;
    # a version is downloaded once per server and reused
    assert finetune_registry.pin(f"models:/{name}@{ALIAS}", mlflow_server) == f"models:/{name}/{champion.version}"
    assert finetune_registry.pin(f"models:/{name}", mlflow_server) == f"models:/{name}/{champion.version}"
    copy = finetune_registry.download(f"models:/{name}/{champion.version}", mlflow_server)
    assert copy == finetune_registry.download(f"models:/{name}@{ALIAS}", mlflow_server)
    assert json.loads((copy / "finetune.json").read_text())["finetune_key"] == expected
    assert classifier.result.finetune_key == expected
    cells = ad.read_h5ad(sample_h5ad)[:20].copy()
    probs = classifier.predict_proba(cells)
    assert probs.shape == (20, len(classifier.labels)) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert set(classifier.predict(cells)) <= set(classifier.labels)

    with pytest.raises(ConfigError) as missing:
        load_classifier("models:/helical-geneformer-no_such_label@champion", cache_dir=fixture_cache,
                        tracking_uri=mlflow_server)  # fmt: skip
    assert missing.value.code == "E804" and "no_such_label" in missing.value.message

    # annotate a query with the champion, through the registry (the folder comes back from MLflow's artifacts)
    query = tmp_path / "query.h5ad"
    cells.write_h5ad(query)
    run = RunParams(model="geneformer", device="cpu", cache_dir=fixture_cache, shard_size=10)
    annotated = annotate_with_classifier(query, f"models:/{name}@{ALIAS}", run, tmp_path / "annotated",
                                         tracking_uri=mlflow_server)  # fmt: skip
    assert annotated.finetuned is not None and annotated.finetuned.source == f"models:/{name}@{ALIAS}"
    assert annotated.finetuned.finetune_key == expected and annotated.classes == classifier.labels
    out = ad.read_h5ad(Path(annotated.query.run_dir) / ANNOTATIONS)
    np.testing.assert_allclose(out.obsm["predicted_cell_type_probabilities"], probs, atol=1e-5)
    with pytest.raises(ConfigError) as no_alias:  # a clear error, not a stack trace
        annotate_with_classifier(query, f"models:/{name}@no_such_alias", run, tmp_path / "annotated",
                                 tracking_uri=mlflow_server)  # fmt: skip
    assert no_alias.value.code == "E804" and "'no_such_alias'" in no_alias.value.message


def test_a_registration_that_stopped_half_way_is_completed_not_repeated(
    mlflow_server: str, sample_h5ad: Path, fixture_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server goes away after the run (then after the version, before the alias): the next registration
    completes that run and that version; registering the same folder again gives the same version."""
    from mlflow.tracking import MlflowClient

    from helical_airflow import settings
    from helical_airflow.finetune import train_model

    adata = ad.read_h5ad(sample_h5ad)
    adata.obs["kind"] = adata.obs["cell_type"]  # a label key of its own: a registered name no other test touches
    adata.write_h5ad(tmp_path / "sample.h5ad")
    params = FineTuneParams(model="geneformer", label_key="kind", device="cpu", cache_dir=fixture_cache, epochs=1,
                            max_train_cells=12, validation_fraction=0.3, shard_size=350)  # fmt: skip
    folder, result = train_model(tmp_path / "sample.h5ad", params, tmp_path / "out")
    name, key = registered_name("geneformer", "kind"), result.finetune_key
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)

    def on_server() -> tuple[list, list]:
        experiment = client.get_experiment_by_name(settings.get().mlflow_experiment + "-finetune")
        runs = client.search_runs([experiment.experiment_id], f"tags.finetune_key = '{key}'") if experiment else []
        return runs, client.search_model_versions(f"name = '{name}'")

    class ServerGone(Exception):
        """What the client raises when the server drops the connection at that step."""

    def gone(*args: object, **kwargs: object) -> None:
        raise ServerGone("connection reset by the server")

    with monkeypatch.context() as patch:  # 1. the run and its artifacts are there, then no version
        patch.setattr(MlflowClient, "create_model_version", gone)
        record = finetune_registry.register_folder(folder, result, mlflow_server)
    assert record is not None and record["status"] == "unregistered" and "ServerGone" in record["error"]
    (run,), versions = on_server()
    assert versions == [] and run.info.status == "FINISHED"

    with monkeypatch.context() as patch:  # 2. the version is there, then no alias
        patch.setattr(MlflowClient, "set_registered_model_alias", gone)
        record = finetune_registry.register_folder(folder, result, mlflow_server)
    assert record is not None and record["status"] == "unregistered"
    runs, (version,) = on_server()
    assert [r.info.run_id for r in runs] == [run.info.run_id] and version.run_id == run.info.run_id
    assert version.tags["finetune_key"] == key and not version.aliases

    record = finetune_registry.register_folder(folder, result, mlflow_server)  # 3. completed: same run, same version
    assert record is not None and record["status"] == "registered", record
    assert (record["version"], record["mlflow_run_id"], record["alias"]) == (version.version, run.info.run_id, ALIAS)
    assert client.get_model_version_by_alias(name, ALIAS).version == version.version

    (folder / REGISTRY_FILE).unlink()  # 4. nothing local to go by: the server's tags say it is registered
    again = finetune_registry.register_folder(folder, result, mlflow_server)
    assert again == record
    runs, versions = on_server()
    assert len(runs) == 1 and [v.version for v in versions] == [version.version]
