"""The CLI's shared run options: one definition, every command that takes them, parsed into RunParams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from helical_airflow import cli
from helical_airflow.spec import RunParams

RUN_FLAGS = {name: "--" + name.replace("_", "-") for name in cli.RUN_OPTIONS} | {"options": "--option"}


def _help_text(option: Any) -> str:
    """The help text written in the option's Annotated alias."""
    [info] = [meta for meta in get_args(option) if isinstance(meta, typer.models.OptionInfo)]
    return str(info.help)


def _click_options(command: str) -> dict[str, TyperOption]:
    """The options typer built for `command`, by parameter name."""
    group = typer.main.get_command(cli.app)
    assert isinstance(group, TyperGroup)
    found = group.commands[command]
    return {p.name: p for p in found.params if isinstance(p, TyperOption) and p.name}


@pytest.mark.parametrize("command", ["run", "plan"])
def test_run_and_plan_take_every_run_option_with_its_help_and_default(command: str) -> None:
    options = _click_options(command)
    assert set(options) == {*cli.RUN_OPTIONS, "out", *(("label_key", "tracking_uri") if command == "run" else ())}
    for name, (option, default) in cli.RUN_OPTIONS.items():
        assert RUN_FLAGS[name] in options[name].opts
        assert options[name].help == _help_text(option)
        assert options[name].default == default
    assert options["model"].opts == ["--model", "-m"]
    assert str(options["out"].default) == str(cli.DEFAULT_OUT)  # run's is a str: it also takes s3://... URLs


def test_run_option_defaults_are_run_params_defaults() -> None:
    for name, field in RunParams.model_fields.items():
        if name == "options":  # repeatable --option: none given is RunParams' empty dict
            assert cli.RUN_OPTIONS[name][1] is None and RunParams(model="m").options == {}
        elif name != "model":  # RunParams requires a model; the CLI's default is geneformer
            assert cli.RUN_OPTIONS[name][1] == field.default, name
    for name in cli.SEQUENCE_FLAGS:  # shorthands for sequence model options: none given adds none
        assert cli.RUN_OPTIONS[name][1] is None and name not in RunParams.model_fields


def test_validate_takes_only_the_run_options_it_uses() -> None:
    assert set(_click_options("validate")) == {"model", "layer", "cache_dir", "options", "as_json", *cli.SEQUENCE_FLAGS}


@pytest.mark.parametrize("command", ["run", "plan", "validate"])
def test_help_shows_every_option_with_its_help_text(command: str) -> None:
    result = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0, result.output
    for name in _click_options(command):
        if name in cli.RUN_OPTIONS:
            flag = RUN_FLAGS[name]
            assert flag in result.output, flag
            assert _help_text(cli.RUN_OPTIONS[name][0]) in result.output, flag


def _recording_app(*names: str) -> tuple[typer.Typer, list[tuple[str, RunParams, Path]]]:
    """A one-command app whose command takes run options through cli.run_options and records what it got."""
    seen: list[tuple[str, RunParams, Path]] = []
    app = typer.Typer()

    @app.command()
    @cli.run_options(*names)
    def record(input: str, params: RunParams, out: Path = Path("o")) -> None:
        seen.append((input, params, out))

    return app, seen


def test_run_options_builds_run_params_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app, seen = _recording_app()
    args = ["in.h5ad", "-m", "scgpt", "--shard-size", "7", "--device", "cpu", "--precision", "bf16",
            "--batch-size", "3", "--layer", "counts", "--engine", "fast", "--seed", "5", "--cache-dir", "weights",
            "--out", "elsewhere"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen == [(
        "in.h5ad",
        RunParams(model="scgpt", shard_size=7, device="cpu", precision="bf16", batch_size=3, layer="counts",
                  engine="fast", seed=5, cache_dir=str(tmp_path / "weights")),
        Path("elsewhere"),
    )]


def test_run_options_defaults_and_cache_dir_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELICAL_AIRFLOW_CACHE_DIR", "/from/env")
    app, seen = _recording_app()
    result = CliRunner().invoke(app, ["in.h5ad"])
    assert result.exit_code == 0, result.output
    [(_, params, out)] = seen
    assert params == RunParams(model="geneformer", cache_dir="/from/env")
    assert out == Path("o")


def test_run_options_subset_rejects_the_others() -> None:
    app, seen = _recording_app("model", "layer")
    ok = CliRunner().invoke(app, ["in.h5ad", "--layer", "raw"])
    assert ok.exit_code == 0, ok.output
    assert seen[0][1].layer == "raw" and seen[0][1].shard_size == RunParams.model_fields["shard_size"].default
    refused = CliRunner().invoke(app, ["in.h5ad", "--shard-size", "3"])
    assert refused.exit_code == 2
    assert len(seen) == 1


def test_run_options_needs_a_params_parameter_and_known_names() -> None:
    with pytest.raises(ValueError, match="not run options"):
        cli.run_options("modle")

    def no_params(input: str) -> None: ...

    with pytest.raises(TypeError, match="no `params` parameter"):
        cli.run_options()(no_params)


def test_plan_command_writes_the_options_into_plan_json(
    sample_h5ad: Path, fixture_cache: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli.app,
        ["plan", str(sample_h5ad), "--model", "scgpt", "--shard-size", "250", "--device", "cpu", "--seed", "3",
         "--cache-dir", fixture_cache, "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    plan_file = Path(result.stdout.strip().splitlines()[-1])
    assert plan_file.is_file() and out in plan_file.parents
    params = json.loads(plan_file.read_text())["params"]
    assert params["model"] == "scgpt"
    assert params["shard_size"] == 250 and params["device"] == "cpu" and params["seed"] == 3
    assert params["cache_dir"] == str(Path(fixture_cache).resolve())


def test_run_and_merge_document_label_key_and_tracking() -> None:
    for command in ("run", "merge"):
        options = _click_options(command)
        assert options["label_key"].opts == ["--label-key"] and options["label_key"].default is None
        assert options["tracking_uri"].opts == ["--tracking-uri"] and "$MLFLOW_TRACKING_URI" in options[
            "tracking_uri"
        ].help
        assert "cell_type before louvain" in options["label_key"].help
