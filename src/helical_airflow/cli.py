"""`helical-airflow`: embed a whole .h5ad with a Helical model, shard by shard."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import annotate as annotate_job
from . import annotate_finetuned, objstore, settings
from . import compare as compare_job
from . import finetune as finetune_job
from .embed import FIXTURE_WARNING, Recycle, embed_shards
from .errors import RECYCLE_EXIT, ConfigError, HelicalAirflowError
from .launchers import LAUNCHERS
from .launchers.base import unknown_launcher
from .logs import RunLogFile, json_handler, wanted_format
from .models import FAMILIES, MODELS, get_model
from .models.download import download_model
from .models.fixture import FIXTURE_FAMILIES, build_fixture
from .pipeline import finish, prepare
from .pipeline import run as run_pipeline
from .plan import load_plan
from .seqio import read_as_note
from .spec import DEFAULT_MODEL, Device, Engine, Plan, Precision, RunParams, ShardResult, schema_of
from .validate import validate_input

if TYPE_CHECKING:
    from .logs import RunLogFile

app = typer.Typer(
    help=__doc__ + "\n\nTypical use: `helical-airflow models fixture --out .fixture-cache` (offline test "
    "weights), then `helical-airflow run data/sample.h5ad --model geneformer --cache-dir .fixture-cache`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="The models helical-airflow can run, and the offline fixture cache.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

err = Console(stderr=True)
console = Console(width=None if sys.stdout.isatty() else 160)  # stdout; tables stay readable in logs
F = TypeVar("F", bound=Callable[..., Any])

# Options shared by run / validate / plan.
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="model name; see `helical-airflow models list`")]
ShardSizeOpt = Annotated[int, typer.Option(min=1, help="cells or records per shard (memory follows it, not the file)")]
DeviceOpt = Annotated[Device, typer.Option(help="cpu, cuda, or auto (cuda when torch sees a GPU)")]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        help="fp32, fp16 or bf16 on GPU; a CPU runs fp32, or bf16 when asked for (torch autocast). "
        "Default: the model's profile (GPU), fp32 (CPU). fp16/bf16 runs are checked against fp32 "
        "(--agreement-cells)"
    ),
]
AgreementCellsOpt = Annotated[
    int,
    typer.Option(
        min=schema_of("agreement_cells")["minimum"],
        max=schema_of("agreement_cells")["maximum"],
        help="fp16/bf16 runs: cells (records) re-embedded in fp32 to measure the agreement (cosine, kNN "
        "overlap) the quality gate checks; all of them when fewer",
    ),
]
BatchOpt = Annotated[int | None, typer.Option(min=1, help="cells (records) per forward pass; default: the profile's")]
LayerOpt = Annotated[str | None, typer.Option(help="layer holding raw integer counts (default: X)")]
MemoryCapOpt = Annotated[
    float | None,
    typer.Option(
        min=0.01, help="GB one embed process may use; past it the shard is stopped (E305) and the retry halves the "
        "batch size. Default: the model's profile (`models list`)",
    ),
]  # fmt: skip
EngineOpt = Annotated[
    Engine | None,
    typer.Option(
        help="fast (helical's tokens, weights and pooling; a faster forward pass, docs/fast_path.md) or helical "
        "(helical's own get_embeddings). Default: the model's profile (fast for Geneformer and scGPT)"
    ),
]
CacheOpt = Annotated[
    str | None,
    typer.Option(
        help="weights cache root (helical's CACHE_DIR_HELICAL_PREFIX); e.g. the folder `models fixture` wrote. "
        "Default: $HELICAL_AIRFLOW_CACHE_DIR, else helical's default"
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(min=schema_of("seed")["minimum"], max=schema_of("seed")["maximum"],
                 help="random seed for anything stochastic in the model"),
]  # fmt: skip
ModelOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        metavar="NAME=VALUE",
        help="a model option that changes the embedding, repeatable (e.g. --option species=mouse for UCE); "
        "each family's options and defaults: `helical-airflow models list --options`, docs/models.md",
    ),
]
OutOpt = Annotated[Path, typer.Option(help="output root; the run goes to OUT/<dataset>/<run_key>/")]
# sequence inputs (FASTA / CSV / TSV / Parquet): shorthands for the sequence models' --option id_column=... etc.
IdColumnOpt = Annotated[str | None, typer.Option(help="sequence tables: the id column (default: id)")]
SequenceColumnOpt = Annotated[str | None, typer.Option(help="sequence tables: the sequence column (default: sequence)")]
TooLongOpt = Annotated[
    str | None,
    typer.Option(help="a sequence longer than the model's context: error (default), truncate, or window (context-long "
                 "windows, embeddings mean-pooled)"),
]  # fmt: skip
LabelKeyOpt = Annotated[
    str | None,
    typer.Option(
        help="obs column of cell labels the quality gate scores against (kNN label transfer, silhouette, vs a PCA "
        "baseline) and the report colours by. Default: a guess (an annotation-like column with 2-50 categories, "
        "e.g. cell_type before louvain; never batch/donor/sample), named in the report"
    ),
]
TrackingOpt = Annotated[
    str | None,
    typer.Option(
        help="MLflow tracking server to log the run to (params, metrics, manifest and report), e.g. "
        "http://127.0.0.1:5000. Default: $MLFLOW_TRACKING_URI; unset: no tracking. A server that is down costs "
        "a few seconds and a warning, never the run (rerun to track it)"
    ),
]
InputArg = Annotated[Path, typer.Argument(help="the .h5ad file (raw integer counts in X or --layer)")]
# `run` also takes object storage URLs (objstore.py): a str, since a Path would fold s3://b/k into s3:/b/k
RunInputArg = Annotated[
    str, typer.Argument(help="the input file: a path, or an object storage URL (s3://BUCKET/KEY.h5ad; gs://, az://)")
]
RunOutOpt = Annotated[
    str,
    typer.Option(help="output root, a folder or a URL (s3://BUCKET/PREFIX); the run goes to OUT/<dataset>/<run_key>/"),
]


#: how _setup_logging set up the console: `run` keeps it quiet only in the rich format without --verbose
_LOGGING: dict[str, bool] = {"verbose": False, "json": False}
RUN_LOG = "run.log"  # in the run folder: the details of `helical-airflow run` (logs.RunLogFile)
ANNOTATE_LOG = "annotate.log"  # in the query's run folder: the details of `helical-airflow annotate`, both runs
COMPARE_LOG = "compare.log"  # in the comparison folder: the details of `helical-airflow compare`, every run


def _setup_logging(verbose: bool, log_format: str | None = None) -> None:
    json_lines = wanted_format(log_format) == "json"  # one JSON object per line with run key, shard, model
    _LOGGING.update(verbose=verbose, json=json_lines)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[
            json_handler(sys.stderr) if json_lines else RichHandler(console=err, show_path=False, rich_tracebacks=True)
        ],
        force=True,
    )
    for noisy in ("h5py", "matplotlib", "numba", "urllib3", "filelock", "fsspec", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def friendly_errors[F: Callable[..., Any]](func: F) -> F:
    """Print our errors as `error CODE: message / fix: hint` instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HelicalAirflowError as exc:
            err.print(f"[bold red]error {exc.code}[/]: {exc.message}\n  [bold]fix[/]: {exc.hint}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    log_format: Annotated[
        str | None,
        typer.Option(
            help="rich (for people) or json (one object per line with run_key, shard, model: for Loki). "
            "Default: $HELICAL_AIRFLOW_LOG_FORMAT, else rich"
        ),
    ] = None,
) -> None:
    _setup_logging(verbose, log_format)


def _default(field: str) -> Any:
    return RunParams.model_fields[field].default


#: The options that fill RunParams, each written once: its typer option and its default (RunParams' own
#: default where it has one, so the CLI and the library agree).
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (ModelOpt, DEFAULT_MODEL),
    "shard_size": (ShardSizeOpt, _default("shard_size")),
    "device": (DeviceOpt, _default("device")),
    "precision": (PrecisionOpt, _default("precision")),
    "batch_size": (BatchOpt, _default("batch_size")),
    "layer": (LayerOpt, _default("layer")),
    "engine": (EngineOpt, _default("engine")),
    "seed": (SeedOpt, _default("seed")),
    "memory_cap_gb": (MemoryCapOpt, _default("memory_cap_gb")),
    "agreement_cells": (AgreementCellsOpt, _default("agreement_cells")),
    "options": (ModelOptionOpt, None),
    "cache_dir": (CacheOpt, _default("cache_dir")),
    "id_column": (IdColumnOpt, None),
    "sequence_column": (SequenceColumnOpt, None),
    "too_long": (TooLongOpt, None),
}
#: RUN_OPTIONS that are model options of the sequence families (models/sequence.py SEQUENCE_OPTIONS' names, typed
#: here because the CLI starts without importing the models package, ~0.6 s; tests/unit/test_dag_params.py keeps
#: them equal), not RunParams fields
SEQUENCE_FLAGS = ("id_column", "sequence_column", "too_long")
DEFAULT_OUT = Path("outputs")


def _params(**options: Any) -> RunParams:
    """RunParams from the CLI options given; the others take their RUN_OPTIONS default."""
    values = {name: options.get(name, default) for name, (_, default) in RUN_OPTIONS.items()}
    cache_dir = values["cache_dir"]
    values["cache_dir"] = str(Path(cache_dir).resolve()) if cache_dir else settings.cache_dir()
    values["options"] = _model_options(values["options"] or [])
    for flag in SEQUENCE_FLAGS:
        given = values.pop(flag)
        if given is not None:
            values["options"][flag] = given
    return RunParams(**values)


def _model_options(pairs: list[str]) -> dict[str, str]:
    """`--option NAME=VALUE` pairs as a dict (E227 for one without `=`)."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError("E227", f"--option {pair!r} is not NAME=VALUE", "write it as e.g. --option species=mouse")
        out[name.strip()] = value.strip()
    return out


def run_options(*names: str) -> Callable[[F], F]:
    """Give a command the RUN_OPTIONS in `names` (all of them when none is named) in place of `params: RunParams`.

    The command is called with `params` built from those options; its other parameters stay where they were.
    typer reads the options from the signature made here, so `--help` shows each with its help and default.
    """
    chosen = names or tuple(RUN_OPTIONS)
    unknown = sorted(set(chosen) - set(RUN_OPTIONS))
    if unknown:
        raise ValueError(f"not run options: {unknown}")
    options = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=RUN_OPTIONS[name][0], default=RUN_OPTIONS[name][1]
        )
        for name in chosen
    ]

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own = list(signature.parameters.values())
        names_here = [param.name for param in own]
        if "params" not in names_here:
            raise TypeError(f"{func.__name__} has no `params` parameter for the run options to replace")
        at = names_here.index("params")
        after = [param.replace(kind=inspect.Parameter.KEYWORD_ONLY) for param in own[at + 1 :]]
        parameters = [*own[:at], *options, *after]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in chosen if name in kwargs}
            return func(*args, params=_params(**given), **kwargs)

        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {param.name: param.annotation for param in parameters}
        wrapper.__annotations__["return"] = signature.return_annotation
        return cast(F, wrapper)

    return decorate


def _scores_line(manifest: Any) -> str:
    q = manifest.quality
    if not (q and q.embedding_scores and q.pca_scores):
        return "none (no label column)" if q else "not run"
    e, b = q.embedding_scores, q.pca_scores
    return (f"obs[{q.label_key!r}]: {e.knn_accuracy:.3f}, {e.silhouette:.3f} "
            f"(PCA baseline {b.knn_accuracy:.3f}, {b.silhouette:.3f})")  # fmt: skip


@contextmanager
def _run_details(what: str, details: RunLogFile | None = None) -> Iterator[RunLogFile]:
    """The command's details go to its log file (`_run_log`) while the body runs; a coded error's hint names the
    file ("<what>: <path>"); the handler is taken off and the file closed however the body ends."""
    details = details if details is not None else _run_log()
    try:
        yield details
    except HelicalAirflowError as exc:
        if details.path is not None:
            exc.hint = f"{exc.hint} ({what}: {details.path})"
        raise
    finally:
        logging.getLogger().removeHandler(details)
        details.close()


def _run_log() -> RunLogFile:
    """Where `run` puts its details: every log line goes to <run folder>/run.log. The console (rich format, no
    --verbose) keeps warnings and errors, the progress bar, one fixture warning (said at the plan: the shard's own
    warning is left to the file) and the summary table; the sample job printed 382 lines before (552 with the
    fixture build), most of them INFO lines of ours and helical's, one fixture warning per shard and
    transformers' "Loading weights" bar. With --verbose or --log-format json the console has every line, as before.
    """
    root = logging.getLogger()
    details = RunLogFile(logging.DEBUG if _LOGGING["verbose"] else logging.INFO)
    root.addHandler(details)
    if not _LOGGING["verbose"] and not _LOGGING["json"]:
        for handler in root.handlers:
            if isinstance(handler, RichHandler):
                handler.setLevel(logging.WARNING)
                handler.addFilter(lambda record: record.getMessage() != FIXTURE_WARNING)
        _no_library_progress_bars()
        # helical's scGPT, C2S and Tahoe packages print their INFO lines on stdout through a handler of their own,
        # not propagated, unless their logger has a handler already (helical/models/scgpt/__init__.py:5-15): a
        # do-nothing one there sends their lines on to the root's handlers, so to run.log
        for name in ("scGPT", "c2s", "Tahoe"):
            if not logging.getLogger(name).handlers:
                logging.getLogger(name).addHandler(logging.NullHandler())
    return details


def _no_library_progress_bars() -> None:
    """transformers' per-model "Loading weights" bar (tqdm, on stderr) is a detail next to the run's own bar.
    transformers reads huggingface_hub's switch when it is imported, and keeps its own once it is."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


@app.command()
@friendly_errors
@run_options()
def run(
    input: RunInputArg,
    params: RunParams,
    out: RunOutOpt = str(DEFAULT_OUT),
    label_key: LabelKeyOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Validate, plan, embed every shard, merge, check quality and write the report, in one go.

    Re-running the same command reuses finished shards; a killed run resumes where it stopped. INPUT and --out may
    be object storage URLs (s3://BUCKET/...; credentials from the standard AWS variables or files, see
    docs/scale-out.md).
    """
    with _run_details("this run's log") as details:
        manifest, bar = _run_with_progress(input, params, out, label_key, tracking_uri, details, run_pipeline)
    plan_dir = _run_location(out, manifest.dataset, manifest.run_key)
    table = Table(title="helical-airflow run", show_header=False)
    for key, value in [
        (manifest.input.unit, manifest.total_cells),
        ("model", f"{manifest.model}{' (FIXTURE)' if manifest.fixture else ''}"),
        ("shards", len(manifest.shards)),
        ("shards reused this time", bar.get("reused", 0)),
        ("embedding seconds", manifest.total_shard_seconds),
        ("quality gate", "passed" if manifest.quality and manifest.quality.passed else "FAILED"),
        ("label scores (kNN, silhouette)", _scores_line(manifest)),
        ("MLflow", (manifest.tracking or {}).get("mlflow_run_id") or (manifest.tracking or {}).get("status", "off")),
        ("embeddings", f"{plan_dir}/embeddings.h5ad"),
        ("manifest", f"{plan_dir}/manifest.json"),
        ("report", f"{plan_dir}/report.html"),
        ("log", f"{plan_dir}/{RUN_LOG}"),
    ]:
        table.add_row(key, str(value))
    console.print(table)


def _run_location(out: str, dataset: str, run_key: str) -> str:
    """The run folder for the summary: a local folder, or the run's URL in the store."""
    if objstore.is_url(out):
        return str(objstore.parse(out).child(dataset, run_key))
    return str(Path(Path(out).resolve(), dataset, run_key))


def _run_with_progress(
    input: Path | str, params: RunParams, out: Path | str, label_key: str | None, tracking_uri: str | None,
    details: RunLogFile, run_pipeline: Callable[..., Any],
) -> tuple[Any, dict[str, Any]]:  # fmt: skip

    with _progress() as progress:
        bar: dict[str, Any] = {}

        def on_plan(plan: Plan) -> None:
            details.open(plan.out_path / RUN_LOG)
            err.print(f"run [bold]{plan.run_key}[/] -> {plan.out_dir}  ({len(plan.shards)} shards)")
            if plan.fixture:
                err.print("[bold yellow]FIXTURE weights: random tiny models; embeddings carry no biology[/]")
            note = read_as_note(plan.input)  # e.g. an RNA model given DNA letters: T read as U
            if note:
                err.print(note, highlight=False)
            bar["id"] = progress.add_task("embedding", total=plan.input.n_cells, info="")

        def on_shard(plan: Plan, result: ShardResult) -> None:
            bar["reused"] = bar.get("reused", 0) + int(result.reused)
            rate = "reused" if result.reused else f"{result.cells / max(result.seconds, 1e-9):.0f} {plan.input.unit}/s"
            progress.update(bar["id"], advance=result.cells, info=f"shard {result.index}: {rate}")

        out_root = out if objstore.is_url(out) else Path(out).resolve()
        manifest = run_pipeline(input, params, out_root, on_plan=on_plan, on_shard=on_shard,
                                label_key=label_key, tracking_uri=tracking_uri)  # fmt: skip
    return manifest, bar


@app.command()
@friendly_errors
@run_options("model", "layer", "cache_dir", "options", *SEQUENCE_FLAGS)
def validate(
    input: InputArg,
    params: RunParams,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Check that INPUT can be embedded by MODEL, without writing anything.

    Exits 2 with an error code and a one-line fix when it cannot (see docs/errors.md).
    """
    with err.status("validating (streaming through the counts)..."):
        summary = validate_input(str(input), params.model, params.layer, params.cache_dir, options=params.options)
    if as_json:
        console.print_json(summary.model_dump_json())
        return
    table = Table(title=f"{input} is valid for {params.model}", show_header=False)
    for key, value in summary.model_dump().items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
@friendly_errors
@run_options()
def plan(input: InputArg, params: RunParams, out: OutOpt = DEFAULT_OUT) -> None:
    """Validate INPUT and write plan.json (run key and shards); prints the plan's path on stdout."""
    made = prepare(input, params, out.resolve())
    err.print(f"{len(made.shards)} shards of up to {params.shard_size} {made.input.unit}; run key {made.run_key}")
    print(made.plan_file)


@app.command("embed-shard")
@friendly_errors
def embed_shard_command(
    plan_path: Annotated[Path, typer.Option("--plan", help="plan.json written by `plan`")],
    shard: Annotated[
        list[int], typer.Option(help="shard index (0-based); repeat it to embed several with one model load", min=0)
    ],
) -> None:
    """Embed shards of a plan with one model load (what every launcher runs).

    Each shard is written atomically to shards/<i>.npy with its record shards/<i>.json (where launchers read the
    result); a finished shard is reused. Exits 75 after a shard when the process should be recycled
    (HELICAL_AIRFLOW_RUNNER_MAX_RSS_MB, default 90% of the plan's memory cap; HELICAL_AIRFLOW_RUNNER_MAX_SHARDS):
    the launcher then starts a fresh process for the shards left.
    """
    loaded = load_plan(plan_path)
    bound = Recycle(*settings.recycle_bounds(loaded.params.memory_cap_gb))
    say = logging.getLogger("helical_airflow").info
    results, left = embed_shards(loaded, shard, bound, on_shard=lambda _, r: say(
        "shard %d %s (peak RSS %.0f MB)", r.index,
        "reused" if r.reused else f"embedded {r.cells} {loaded.input.unit} in {r.seconds:.2f}s", r.peak_rss_mb,
    ))  # fmt: skip
    if left:
        say("%d shard(s) left for a fresh process: %s", len(left), left)
        raise typer.Exit(RECYCLE_EXIT)


@app.command("predict-shard")
@friendly_errors
def predict_shard_command(
    plan_path: Annotated[Path, typer.Option("--plan", help="the query's plan.json (its run embedded or not)")],
    classifier: Annotated[
        str, typer.Option(help="the fine-tuned model: its folder or models:/NAME/VERSION (MLFLOW_TRACKING_URI)")
    ],
    shard: Annotated[
        list[int], typer.Option(help="shard index (0-based); repeat it to predict several with one model load", min=0)
    ],
) -> None:
    """Predict shards of a plan with a fine-tuned model, loaded once (what the launchers run for `annotate
    --classifier` and the workflow DAG's predict task).

    Each shard's class probabilities are written atomically to predictions/<finetune_key>/<i>.npy in the run
    folder (where launchers read the result); a finished shard is reused. Exits 75 after a shard when the process
    should be recycled, like embed-shard.
    """
    loaded = load_plan(plan_path)
    resolved = annotate_finetuned.resolve(classifier)
    annotate_finetuned.check_model(resolved.result, loaded.params.model, resolved.source)  # E830
    bound = Recycle(*settings.recycle_bounds(loaded.params.memory_cap_gb))
    done, left = annotate_finetuned.predict_shards(loaded, resolved, shard, bound)
    say = logging.getLogger("helical_airflow").info
    for path, reused in done:
        say("%s %s", "reused" if reused else "predicted", path)
    if left:
        say("%d shard(s) left for a fresh process: %s", len(left), left)
        raise typer.Exit(RECYCLE_EXIT)


@app.command()
@friendly_errors
def merge(
    plan_path: Annotated[Path, typer.Option("--plan", help="plan.json written by `plan`")],
    label_key: LabelKeyOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Merge the finished shards into embeddings.h5ad + manifest.json, run the quality gate, write report.html."""
    loaded = load_plan(plan_path)
    with err.status("merging shards, checking quality, writing the report..."):
        manifest = finish(loaded, label_key, tracking_uri)
    done = f"merged {manifest.total_cells} {loaded.input.unit} from {len(manifest.shards)} shards"
    err.print(f"{done} into {loaded.out_dir}")
    print(Path(loaded.out_dir) / "manifest.json")


@app.command()
@friendly_errors
@run_options()
def annotate(
    ctx: typer.Context,
    query: Annotated[Path, typer.Argument(help="the data to annotate (.h5ad, or a sequence file for sequence models)")],
    params: RunParams,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="labelled reference of the same kind as QUERY; its --label-key column trains the classifier "
            "(not with a fine-tuned --classifier)"
        ),  # fmt: skip
    ] = None,
    label_key: Annotated[
        str | None,
        typer.Option(
            help="the reference's obs column of labels (e.g. cell_type); when QUERY has it too, the "
            "predictions are scored against it (with a fine-tuned --classifier: default the column it learnt)"
        ),
    ] = None,  # fmt: skip
    classifier: Annotated[
        str,
        typer.Option(
            help="knn (k nearest reference cells, cosine) or logreg (logistic regression) fitted on "
            "--reference; or a fine-tuned model: its folder, models:/NAME@ALIAS or models:/NAME/VERSION "
            "(--model then defaults to the model it was fine-tuned from)"
        ),  # fmt: skip
    ] = "knn",
    n_neighbors: Annotated[int, typer.Option(min=1, help="knn: neighbours that vote")] = 15,
    logreg_c: Annotated[float, typer.Option(min=1e-9, help="logreg: inverse regularisation strength C")] = 1.0,
    confidence_threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="a cell whose best class probability is below this is 'unknown'")
    ] = 0.5,
    cv_folds: Annotated[
        int,
        typer.Option(
            min=2,
            max=50,
            help="stratified folds for the reference's held-out accuracy and macro F1; "
            "every class needs at least this many cells",
        ),  # fmt: skip
    ] = 5,
    out: OutOpt = DEFAULT_OUT,
    tracking_uri: TrackingOpt = None,
    launcher: Annotated[
        str,
        typer.Option(
            help=f"with a fine-tuned --classifier: where its predict process runs ({', '.join(LAUNCHERS)}: a "
            "subprocess, a container, a pod; docs/annotate.md)",
        ),  # fmt: skip
    ] = "local",
) -> None:
    """Annotate QUERY from a labelled REFERENCE: embed both with MODEL (finished runs are reused by their run key,
    so a second call embeds nothing), fit a classifier on the reference's embeddings, predict the query.

    Writes, in the query's run folder (OUT/<query>/<run_key>/): annotations.h5ad (the query's obs plus
    predicted_<KEY> and predicted_<KEY>_confidence, class probabilities in obsm), annotation.json (classifier and
    hyper-parameters, the reference's cross-validated accuracy and macro F1, the query's scores when it has KEY)
    and annotation.html. docs/annotate.md has the details.

    With --classifier FOLDER|models:/NAME@ALIAS a fine-tuned model (helical-airflow finetune) predicts instead,
    shard by shard over the query's plan through --launcher (`predict-shard` in a process of its own, one model
    load), into the same files (docs/annotate.md).

    Example: helical-airflow annotate query.h5ad --reference atlas.h5ad --label-key cell_type --model geneformer
    """
    annotate_finetuned.check_sources(reference, classifier)
    if launcher not in LAUNCHERS:
        raise unknown_launcher(launcher)  # E510, before anything is embedded
    resolved = None
    if annotate_finetuned.is_model_source(classifier):
        resolved = annotate_finetuned.resolve(classifier, tracking_uri)
        if ctx.get_parameter_source("model") in (None, click.core.ParameterSource.DEFAULT):
            params = params.model_copy(update={"model": resolved.result.model})
    elif label_key is None:
        raise ConfigError(
            "E708", "--label-key is missing: it names the reference column of labels that trains the classifier",
            "pass --label-key with the reference's obs column of labels (e.g. cell_type)",
        )  # fmt: skip

    details = _run_log()  # the console keeps warnings and errors; the details go to the query's annotate.log

    def on_plan(role: str, plan: Plan) -> None:
        err.print(f"{role}: run [bold]{plan.run_key}[/] -> {plan.out_dir}  ({len(plan.shards)} shards)")
        if role == "query":
            details.open(plan.out_path / ANNOTATE_LOG)
            if plan.fixture:
                err.print("[bold yellow]FIXTURE weights: random tiny models; embeddings carry no biology[/]")

    with (
        _run_details("the details", details),
        err.status("embedding the reference and the query (finished runs are reused), then classifying..."),
    ):
        if resolved is not None:
            result = annotate_finetuned.annotate_with_classifier(
                query, resolved, params, out.resolve(), label_key, confidence_threshold, tracking_uri,
                on_plan=on_plan, launcher=launcher,
            )  # fmt: skip
        else:
            assert reference is not None and label_key is not None  # check_sources, E708
            aparams = annotate_job.AnnotateParams(
                label_key=label_key, classifier=cast(annotate_job.ClassifierName, classifier), n_neighbors=n_neighbors,
                logreg_c=logreg_c, confidence_threshold=confidence_threshold, cv_folds=cv_folds, seed=params.seed,
            )  # fmt: skip
            result = annotate_job.annotate(
                query, reference, params, aparams, out.resolve(), tracking_uri, on_plan=on_plan
            )
    for line in result.warnings:
        err.print(f"[bold yellow]warning[/]: {line}", highlight=False)
    folder = Path(result.query.run_dir)
    cv, q, tuned = result.reference_cv, result.query_scores, result.finetuned
    table = Table(title="helical-airflow annotate", show_header=False)
    for key, value in [
        ("model", f"{result.model}{' (FIXTURE)' if result.fixture else ''}"),
        ("classifier", f"{result.classifier} {json.dumps(result.hyperparameters)}"),
        ("shards embedded (reference, query)", f"{result.reference.shards_embedded if result.reference else '-'}, "
         f"{result.query.shards_embedded}"),
        (f"reference held out ({cv.folds}-fold CV)" if cv else "fine-tuned model on its validation split",
         f"accuracy {cv.accuracy:.3f}, macro F1 {cv.macro_f1:.3f}" if cv else
         f"accuracy {tuned.val_accuracy:.3f}, macro F1 {tuned.val_macro_f1:.3f}" if tuned else "-"),
        ("query scored", "no KEY column" if q is None else f"accuracy {q.accuracy:.3f}, macro F1 {q.macro_f1:.3f} "
         f"(majority class {q.majority_class_rate:.3f}; no threshold {q.accuracy_without_threshold:.3f})"),
        ("predicted", ", ".join(f"{k} {n}" for k, n in sorted(result.predicted_counts.items(), key=lambda kv: -kv[1]))),
        ("annotations", folder / annotate_job.ANNOTATIONS),
        ("details", folder / annotate_job.ANNOTATION_JSON),
        ("report", folder / annotate_job.ANNOTATION_HTML),
        ("log", folder / ANNOTATE_LOG),
    ]:  # fmt: skip
        table.add_row(key, str(value))
    console.print(table)


@app.command()
@friendly_errors
@run_options("shard_size", "device", "layer", "seed", "cache_dir")
def compare(
    input: Annotated[Path, typer.Argument(help="the data the models are compared on (.h5ad with a label column)")],
    params: RunParams,
    models: Annotated[
        str,
        typer.Option(
            help="comma-separated model names, e.g. geneformer,scgpt,uce (`helical-airflow models list`); "
            "all must read INPUT's kind of data"
        ),
    ],  # fmt: skip
    label_key: Annotated[
        str | None,
        typer.Option(
            help="obs column of cell labels every bio-conservation metric compares with (default: a guess, "
            "e.g. cell_type)"
        ),
    ] = None,  # fmt: skip
    batch_key: Annotated[
        str | None, typer.Option(help="obs column of batches: adds the batch-correction metrics and scIB's total")
    ] = None,
    max_cells: Annotated[
        int, typer.Option(min=50, help="cells scored at most: a seeded, label-stratified sample above this")
    ] = compare_job.MAX_CELLS,
    out: OutOpt = DEFAULT_OUT,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Compare MODELS on INPUT: embed it with each (finished runs are reused by their run key), score every model
    and a PCA baseline on the same cells with scib-metrics (bio conservation; batch correction with --batch-key),
    rank them, and put each model's cost beside its score.

    Writes OUT/<dataset>/compare/<comparison_key>/: comparison.json, comparison.html (the ranked table, a
    UMAP/PCA per model, cost against score); with a tracking URI an MLflow parent run with a child per model.
    docs/compare.md has the details.

    Example: helical-airflow compare data/sample.h5ad --models geneformer,scgpt,uce --label-key cell_type
    """
    cparams = compare_job.CompareParams(
        models=[m.strip() for m in models.split(",") if m.strip()], label_key=label_key, batch_key=batch_key,
        max_cells=max_cells, seed=params.seed,
    )  # fmt: skip

    def for_model(name: str) -> RunParams:
        return RunParams(**{**params.model_dump(), "model": name})

    details = _run_log()

    def on_plan(cplan: compare_job.ComparisonPlan) -> None:
        details.open(cplan.out_path / COMPARE_LOG)
        for run in cplan.runs:
            err.print(f"{run.model}: run [bold]{run.run_key}[/] -> {run.run_dir}")
        if cplan.fixture:
            err.print(f"[bold yellow]{compare_job.NO_BIOLOGY}[/]")

    with (
        _run_details("the details", details),
        err.status("embedding with each model (finished runs are reused), then scoring with scib-metrics..."),
    ):
        result, embedded = compare_job.compare(input, cparams, for_model, out.resolve(), tracking_uri, on_plan=on_plan)
    sampled = ", sampled" if result.sampled else ""
    fixture = " FIXTURE: no biology" if result.fixture else ""
    table = Table(
        title=f"helical-airflow compare: {result.dataset} ({result.scored_cells} cells scored{sampled}){fixture}"
    )
    for col in ("rank", "model", "bio conservation", "batch correction", "total", "embedding s", "cells/s",
                "shards embedded now"):  # fmt: skip
        table.add_column(col)
    for row in result.rows:
        c = row.cost
        table.add_row(
            str(row.rank), row.name + (" (baseline)" if row.baseline else ""), f"{row.bio_conservation:.3f}",
            "-" if row.batch_correction is None else f"{row.batch_correction:.3f}", f"{row.total:.3f}",
            f"{c.embedding_seconds:.1f}" if c else "-", f"{c.cells_per_second:,.1f}" if c else "-",
            str(embedded.get(row.name, "-")),
        )  # fmt: skip
    console.print(table)
    folder = Path(result.out_dir)
    err.print(f"report: {folder / compare_job.COMPARISON_HTML}")
    print(folder / compare_job.COMPARISON_JSON)


@app.command()
@friendly_errors
def finetune(
    input: InputArg,
    label_key: Annotated[str, typer.Option(help="obs column of the labels to learn (e.g. cell_type)")],
    model: ModelOpt = "geneformer",
    epochs: Annotated[int, typer.Option(min=1, help="most epochs (early stopping may end sooner)")] = 3,
    learning_rate: Annotated[float, typer.Option(min=1e-12, help="AdamW learning rate")] = 1e-4,
    freeze_layers: Annotated[int, typer.Option(min=0, help="encoder layers kept frozen (input side)")] = 0,
    validation_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="labelled cells held out per class (stratified, seeded)")
    ] = 0.2,
    max_train_cells: Annotated[
        int | None, typer.Option(min=2, help="cap on training cells (stratified subsample)")
    ] = None,
    patience: Annotated[
        int, typer.Option(min=1, help="early stopping: epochs without a better validation macro F1")
    ] = 2,
    class_weighting: Annotated[
        finetune_job.ClassWeighting, typer.Option(help="balanced (loss weighted n/(k*n_class)) or none")
    ] = "balanced",
    batch_size: Annotated[int, typer.Option(min=1, help="cells per training step")] = 16,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    shard_size: ShardSizeOpt = 1000,
    cache_dir: CacheOpt = None,
    out: OutOpt = DEFAULT_OUT,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Fine-tune MODEL's helical *FineTuningModel on INPUT's --label-key column (docs/finetune.md).

    Stratified train/validation split, one checkpoint per epoch (a killed run resumes from its last finished
    epoch), early stopping, class-weighted loss. Writes OUT/<dataset>/finetune/<KEY>/<finetune_key>/ (model.pt,
    finetune.json, split.json) and, with a tracking URI, logs an MLflow run and registers a new version of
    helical-<family>-<KEY> (alias champion when it is at least as good). Prints the model folder.
    """
    params = finetune_job.FineTuneParams(
        model=model, label_key=label_key, epochs=epochs, learning_rate=learning_rate, freeze_layers=freeze_layers,
        validation_fraction=validation_fraction, max_train_cells=max_train_cells, patience=patience,
        class_weighting=class_weighting, batch_size=batch_size, seed=seed, device=device, shard_size=shard_size,
        cache_dir=str(Path(cache_dir).resolve()) if cache_dir else settings.cache_dir(),
    )  # fmt: skip
    with err.status("fine-tuning (a checkpoint per epoch; rerun the same command to resume)..."):
        trained = finetune_job.finetune(input, params, out.resolve(), tracking_uri)
    best, reg = trained.result.best, trained.registration
    err.print(f"best epoch {best.epoch}/{len(trained.result.history)}: validation accuracy {best.val_accuracy:.3f}, "
              f"macro F1 {best.val_macro_f1:.3f}{' (FIXTURE)' if trained.result.fixture else ''}")  # fmt: skip
    if reg:
        err.print(f"MLflow: {reg['status']}" + (f" {reg.get('model_uri')}" if reg.get("model_uri") else
                                                f" ({reg.get('error')})"))  # fmt: skip
    print(trained.folder)


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
    show_options: Annotated[bool, typer.Option("--options", help="each family's model options instead")] = False,
) -> None:
    """Every model name, its family, modality and resource profile, and where it runs.

    "runs on": cpu+gpu (a CPU or a GPU), gpu (the profile needs a GPU: too large for a CPU in useful time), or
    gpu only (helical's code has CUDA-only kernels: a CPU run fails with E228 before loading). "fixture": an
    offline random-weight stand-in can be built (`models fixture`); without one the model needs its real
    weights (`models download`).
    """
    if show_options:
        table = Table(title="model options (--option NAME=VALUE; part of the run key)")
        for col in ("family", "option", "default", "choices", "what"):
            table.add_column(col)
        for family in FAMILIES.values():
            for option in family.options:
                table.add_row(family.name, option.name, option.default, ", ".join(option.choices) or "any", option.help)
        console.print(table)
        return

    def runs_on(name: str) -> str:
        spec = MODELS[name]
        if FAMILIES[spec.family].cpu_unsupported:
            return "gpu only"
        return "gpu" if spec.profile.gpu == "required" else "cpu+gpu"

    if as_json:
        print(json.dumps({name: {"family": s.family, "helical_model_name": s.helical_model_name,
                                 "embedding_dim": s.embedding_dim, "runs_on": runs_on(name), **vars(s.profile)}
                          for name, s in MODELS.items()}, indent=1))  # fmt: skip
        return
    table = Table(title="helical-airflow models")
    for col in ("name", "family", "modality", "runs on", "precision", "batch", "mem cap GB", "queue", "engine",
                "fixture"):  # fmt: skip
        table.add_column(col)
    for name, spec in MODELS.items():
        p = spec.profile
        table.add_row(
            name, spec.family, p.modality, runs_on(name), p.precision, str(p.batch_size), f"{p.memory_cap_gb:g}",
            p.queue, p.engine, "yes" if FAMILIES[spec.family].fixture else "no",
        )  # fmt: skip
    console.print(table)


@models_app.command("fixture")
@friendly_errors
def models_fixture(
    out_dir: Annotated[Path, typer.Option("--out", help="cache root to write (pass it later as --cache-dir)")],
    family: Annotated[
        list[str] | None, typer.Option(help="model family to build (repeatable); default: all with a fixture")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="a single model to build (repeatable), in addition to --family")
    ] = None,
    shape: Annotated[
        str, typer.Option(help="tiny (tests, seconds) or real (true layer sizes, random weights: benchmarks)")
    ] = "tiny",
    synthetic_genes: Annotated[int, typer.Option(min=0, help="extra synthetic genes in the vocabulary")] = 0,
    seed: SeedOpt = 0,
) -> None:
    """Build the OFFLINE fixture cache: tiny random-weight models and a synthetic vocabulary in helical's layout.

    Lets `run --cache-dir DIR` exercise helical's real code with no network. Everything embedded with it is
    marked as a fixture in its manifest, logs and report.
    """
    families = tuple(family) if family else (() if model else FIXTURE_FAMILIES)
    with err.status(f"building fixture cache in {out_dir}..."):
        built = build_fixture(out_dir.resolve(), families=families, models=model or (), shape=shape,  # type: ignore[arg-type]
                              n_synthetic_genes=synthetic_genes, seed=seed)  # fmt: skip
    err.print_json(json.dumps(built, default=str))
    print(out_dir.resolve())


@models_app.command("download")
@friendly_errors
def models_download(
    model: Annotated[str, typer.Argument(help="model name (helical-airflow models list)")],
    cache_dir: CacheOpt = None,
    option: ModelOptionOpt = None,
) -> None:
    """Fetch a model's real weights into helical's cache with helical's own downloader (needs the network).

    Files already there and confirmed by the store are kept, so a second run, or a run after an interruption,
    fetches only what is missing. Source: $HELICAL_AIRFLOW_MODELS_URL (default helical's store). Prints the
    cache root to pass as --cache-dir.
    """
    target = str(Path(cache_dir).resolve()) if cache_dir else (settings.cache_dir() or str(Path.home()))
    files = download_model(get_model(model), _model_options(option or []), target, settings.models_url())
    for rel, info in files.items():
        err.print(f"{info['action']:>10}  {rel}  sha256 {info['sha256'][:16]}")
    print(target)


def _mount_stack() -> None:
    try:
        from .stack.cli import stack_app  # noqa: PLC0415 - optional: the stack needs the airflow extra
    except ImportError:  # the stack needs the airflow extra; the library works without it
        return
    app.add_typer(stack_app, name="stack", help="The local Airflow stack without Docker (Postgres, Redis, Celery).")


_mount_stack()

if __name__ == "__main__":
    sys.exit(app())
