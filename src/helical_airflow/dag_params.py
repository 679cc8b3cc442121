"""The workflow DAG's Params (its trigger form), generated from the run's contract so a bound or a choice is written
once: RunParams' JSON schema (types, defaults, bounds, choices; spec.py), the sequence models' options (names,
defaults, choices; models/sequence.py SEQUENCE_OPTIONS), the model table, the launchers and the input suffixes of
the modalities. Only the form's own words (titles, descriptions, error messages) are written here.

How the schema becomes a Param, so the form behaves as it always did:
- a required choice (`device`, `launcher`, `model`) is an `enum`, its default first (the form's dropdown);
- an optional choice (`precision`, `engine`, `too_long`) is a nullable string with a `pattern`, not an enum: an
  enum holding None shows a literal "null" in the trigger form, and a required field holding "" makes the form refuse
  its own defaults (both seen in tests/e2e/test_browser.py);
- every other optional field is nullable (`["null", <type>]`), default None: the model's profile decides.

Nothing here imports airflow, helical or torch at import time (the DAG processor imports this module).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from .annotate import AnnotateParams
from .compare import CompareParams
from .finetune_spec import FineTuneParams
from .modality import suffixes
from .models.profiles import ModelOption
from .models.sequence import SEQUENCE_OPTIONS
from .spec import DEFAULT_MODEL, schema_of


def task_defaults(**extra: Any) -> dict[str, Any]:
    """default_args of the job DAGs (workflow, fine-tuning, comparison): two retries 20 s, 40 s apart (at most 10
    min), 30 min per task unless the task says otherwise; `extra` adds or overrides (e.g. a failure callback)."""
    return {
        "owner": "helical-airflow",
        "retries": 2,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": 2.0,  # 20 s, 40 s, ...
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=30),
        **extra,
    }


#: the DAG Param holding the model options (RunParams.options)
MODEL_OPTIONS_PARAM = "model_options"
#: the Params that are the sequence models' options (ignored for single-cell models)
SEQUENCE_PARAMS = tuple(option.name for option in SEQUENCE_OPTIONS)
#: bounds the form adds to the contract: the library takes any shard size, the form stops at a million rows
FORM_ONLY: dict[str, dict[str, Any]] = {"shard_size": {"maximum": 1_000_000}}

#: title and description of each RunParams Param, in the form's order (memory_cap_gb sits after batch_size)
WORDS: dict[str, tuple[str, str]] = {
    "model": ("Model", "A model name from `helical-airflow models list`; family names pick the family's default."),
    "shard_size": ("Shard size", "Cells (sequence inputs: records) per shard (each checkpointed on its own; a task "
                   "embeds a group of shards with one model load). Worker memory follows this, not the file size."),
    "device": ("Device", "auto: CUDA when the worker has a GPU, else CPU."),
    "precision": ("Precision", "Empty: the model's profile on a GPU, fp32 on a CPU (which runs bf16 when asked for). "
                  "fp16/bf16 runs are checked against fp32 on a sample of their cells."),
    "batch_size": ("Batch size", "Cells per forward pass; empty: the model's profile."),
    "memory_cap_gb": ("Memory cap (GB)", "Memory one embed process may use; past it the shard stops with E305 and "
                      "the retry halves the batch size. Empty: the model's profile."),
    "layer": ("Counts layer", "Layer holding raw integer counts; empty: X."),
    "engine": ("Engine", "fast (same embeddings as helical, faster forward pass) or helical (its get_embeddings); "
               "empty: the model's profile (fast for Geneformer and scGPT)."),
    "seed": ("Seed", "Random seed for anything stochastic ({minimum} to {maximum})."),
    "agreement_cells": ("Precision check cells", "fp16/bf16 runs: cells (records) re-embedded in fp32 to measure the "
                        "agreement the quality gate checks ({minimum} to {maximum}; all of them when fewer)."),
}  # fmt: skip
#: the annotation's confidence threshold as AnnotateParams declares it (default and bounds)
ANNOTATE_THRESHOLD: dict[str, Any] = AnnotateParams.model_json_schema()["properties"]["confidence_threshold"]
#: the Params that are RunParams fields, passed through as they are
RUN_PARAM_NAMES = tuple(WORDS)
SEQUENCE_TITLES = {"sequence_column": "Sequence column", "id_column": "Id column", "too_long": "Too-long sequences"}


#: the workflow's `output` Param: empty, or PROTOCOL://BUCKET[/PREFIX] with no user-info (`@`), port-like `:` in the
#: bucket or query string (objstore.parse refuses those too: E906, E907)
OUTPUT_PATTERN = r"^$|^[A-Za-z][A-Za-z0-9+.-]*://[^/@:?\s]+(/[^@?\s]*)?$"


def regex_literal(text: str) -> str:
    # re.escape would also escape `-` and `/`, which JavaScript's unicode regexes (the UI form) reject
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


def input_pattern(data_dir: str) -> str:
    """A path inside the data folder: relative (sample.h5ad) or absolute under it, never `..`, ending in a suffix a
    modality reads (modality.suffixes(): .h5ad; .fa/.fasta/.fna, gzip too, .csv, .tsv, .parquet)."""
    ends = "|".join(regex_literal(s[1:]) for s in sorted(suffixes(), key=lambda s: (len(s), s)))
    return rf"^(?!.*(?:^|/)\.\.(?:/|$))(?:{regex_literal(data_dir)}/)?[^/].*\.(?:{ends})$"


def suffix_words() -> str:
    """The sequence inputs' suffixes for people: `.fa/.fasta/.fna[.gz], .csv, .tsv, .parquet`."""
    fasta = [s for s in suffixes() if not s.endswith(".gz") and f"{s}.gz" in suffixes()]
    others = [s for s in suffixes() if s not in fasta and not s.endswith(".gz") and s != ".h5ad"]
    return ", ".join(["/".join(fasta) + "[.gz]", *others])


def choice_pattern(choices: Sequence[str]) -> str:
    """An optional choice as the form takes it: a pattern, not an enum (see the module's docstring)."""
    return f"^({'|'.join(map(re.escape, choices))})$"


def schema_param(name: str, field_schema: Callable[[str], dict[str, Any]] = schema_of) -> dict[str, Any]:
    """The Param keywords of one field, from its JSON schema (RunParams' unless `field_schema` reads another
    contract's, e.g. FineTuneParams'; see the module's docstring)."""
    schema = field_schema(name)
    nullable = schema.get("default", "required") is None
    kind = schema["type"]
    out: dict[str, Any] = {"type": ["null", kind] if nullable else kind}
    choices = schema.get("enum")
    if choices and nullable:
        out["pattern"] = choice_pattern(choices)
    elif choices:
        out["enum"] = sorted(choices, key=lambda c: c != schema.get("default"))  # the default first
    out.update({k: schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema})
    return {**out, **FORM_ONLY.get(name, {})}


def workflow_params(data_dir: str, models: Sequence[str], launchers: Sequence[str], launcher: str) -> dict[str, Any]:
    """The Params of helical_model_workflow, in the form's order."""
    from airflow.sdk import Param

    def run_param(name: str, default: Any, **extra: Any) -> Any:
        title, description = WORDS[name]
        keywords = schema_param(name)
        return Param(default, title=title, description=description.format(**keywords), **keywords, **extra)

    def choices(option: ModelOption) -> dict[str, Any]:
        return {"pattern": choice_pattern(option.choices)} if option.choices else {}

    sequence = {
        option.name: Param(
            None,
            type=["null", "string"],
            **choices(option),
            title=SEQUENCE_TITLES[option.name],
            description=f"{option.help[0].upper()}{option.help[1:]} (default: {option.default}).",
        )
        for option in SEQUENCE_OPTIONS
    }
    sequence_words = suffix_words()
    return {
        "input_path": Param(
            "sample.h5ad",
            type="string",
            pattern=input_pattern(data_dir),
            title="Input file",
            description=f"Path of the .h5ad (sequence models: {sequence_words}) inside the data folder ({data_dir}), "
            "e.g. `sample.h5ad` or `sample_dna.fa`.",
            # a refused value answers HTTP 400 quoting the schema: this key (ajv-errors' name) reads like the CLI's
            errorMessage=f"error E513: input_path must end in .h5ad (or, for sequence models, {sequence_words}) and "
            f"stay inside the data folder {data_dir} (no `..`, no other absolute path); fix: copy the file into the "
            "data folder and give its path relative to it, e.g. sample.h5ad",
        ),
        # the run's outputs in object storage (objstore.py); credentials never here: the workers' AWS variables or
        # files, or the Airflow connection named by HELICAL_AIRFLOW_STORAGE_CONN_ID
        # None, not "": Airflow's trigger form marks a "string" Param required and refuses its own empty default
        # (tests/e2e/test_browser.py); the other optional Params are ["null", "string"] for the same reason
        "output": Param(
            None,
            type=["null", "string"],
            pattern=OUTPUT_PATTERN,
            title="Output location",
            description="Empty: the workers' output folder (HELICAL_AIRFLOW_OUTPUT_DIR). Or an object storage URL, "
            "e.g. s3://my-bucket/outputs: the run goes to URL/<dataset>/<run key>/, every file uploaded whole as it "
            "is finished, and any worker can take any step (each works in its own local work folder).",
            errorMessage="error E909: output must be empty or PROTOCOL://BUCKET/PREFIX without credentials or a "
            "query (e.g. s3://my-bucket/outputs); fix: give the plain URL, credentials come from the workers",
        ),
        "model": Param(
            DEFAULT_MODEL,
            type="string",
            enum=list(models),
            title=WORDS["model"][0],
            description=WORDS["model"][1],
            errorMessage="error E201: unknown model name; fix: use one of the names `helical-airflow models list` "
            "prints",
        ),
        **{
            name: run_param(name, schema_of(name)["default"])
            for name in RUN_PARAM_NAMES
            if name != "model"  # above: an enum of the model table, with its own error message
        },
        MODEL_OPTIONS_PARAM: Param(
            {},
            type="object",
            title="Model options",
            description='Options that change the embedding, as {"name": "value"}: e.g. {"species": "mouse"} '
            "for UCE. Each family's options: docs/models.md. Empty: the family's defaults.",
        ),
        # sequence models (FASTA / CSV / TSV / Parquet inputs); null: the family's default; ignored for single-cell
        **{name: sequence[name] for name in SEQUENCE_TITLES},  # the form's order
        "label_key": Param(
            None,
            type=["null", "string"],
            title="Label column",
            description="obs column of cell labels: the quality gate scores the embeddings against it (kNN label "
            "transfer, silhouette, vs a PCA baseline) and the report colours by it. Empty: a guess (e.g. cell_type "
            "before louvain), named in the report. With annotate_reference: the reference's column of labels to "
            "learn.",
        ),
        # annotation of the run (optional; empty: no annotation, the run as before)
        "annotate_reference": Param(
            None,
            type=["null", "string"],
            pattern=input_pattern(data_dir),
            title="Annotation reference",
            description="A labelled .h5ad in the data folder: after publishing, the run's cells are annotated from "
            "it (kNN on both inputs' embeddings; its label_key column is learnt). Empty: no annotation from a "
            "reference.",
            errorMessage="error E513: annotate_reference must be a file inside the data folder, like input_path",
        ),
        "annotate_classifier": Param(
            None,
            type=["null", "string"],
            pattern=r"^(models:/[^/@]+(@[A-Za-z0-9_-]+|/[0-9]+)|(?!.*(?:^|/)\.\.(?:/|$))[^:]+)$",
            title="Fine-tuned classifier",
            description="Annotate the run's cells with a fine-tuned model: models:/NAME@ALIAS (MLflow's registry, "
            "e.g. models:/helical-geneformer-cell_type@champion), models:/NAME/VERSION, or a model folder under the "
            "output folder. Empty: none. Not with annotate_reference.",
            errorMessage="error E822: annotate_classifier must be models:/NAME@ALIAS, models:/NAME/VERSION or a "
            "model folder path without `..`",
        ),
        "annotate_confidence_threshold": Param(
            ANNOTATE_THRESHOLD["default"],
            type="number",
            minimum=ANNOTATE_THRESHOLD["minimum"],
            maximum=ANNOTATE_THRESHOLD["maximum"],
            title="Annotation confidence threshold",
            description="A cell whose best class probability is below this is predicted 'unknown'.",
        ),
        "launcher": Param(
            launcher,
            type="string",
            enum=list(launchers),
            title="Launcher",
            description="local: a subprocess on the worker; docker: a container (DockerOperator); kubernetes: a pod "
            "(KubernetesPodOperator). One per group of shards.",
        ),
    }


# ---- the fine-tuning DAG's form (helical_finetune): FineTuneParams' JSON schema (finetune_spec.py) ------------

#: title and description of each FineTuneParams Param, in the form's order (model: an enum of the fine-tunable models)
FINETUNE_WORDS: dict[str, tuple[str, str]] = {
    "label_key": ("Label column", "obs column of the labels to learn (e.g. cell_type)."),
    "epochs": ("Epochs", "Most epochs ({minimum} to {maximum}); early stopping may end sooner. One checkpoint per "
               "epoch: a killed training resumes from its last finished epoch on the task's retry."),
    "learning_rate": ("Learning rate", "AdamW learning rate (above {exclusiveMinimum}, at most {maximum})."),
    "freeze_layers": ("Frozen layers", "Encoder layers kept frozen, from the input side."),
    "validation_fraction": ("Validation fraction", "Labelled cells held out per class (stratified, seeded)."),
    "max_train_cells": ("Max training cells", "Cap on training cells (stratified subsample); empty: all."),
    "patience": ("Patience", "Early stopping: epochs without a better validation macro F1."),
    "class_weighting": ("Class weighting", "balanced: loss weighted n/(k*n_class); none: the plain loss."),
    "batch_size": ("Batch size", "Cells per training step."),
    "seed": ("Seed", "Split, head initialisation and shuffling ({minimum} to {maximum})."),
    "device": ("Device", "auto: CUDA when the worker has a GPU, else CPU."),
    "shard_size": ("Shard size", "Cells tokenised per shard (one mapped task each)."),
}  # fmt: skip
#: the Params that are FineTuneParams fields (with `model`), passed through as they are
FINETUNE_PARAM_NAMES = ("model", *FINETUNE_WORDS)


def finetune_schema_of(field: str) -> dict[str, Any]:
    """FineTuneParams' JSON schema of one field, `null` left out of an optional one (as spec.schema_of)."""
    schema = dict(FineTuneParams.model_json_schema()["properties"][field])
    for option in schema.pop("anyOf", []):
        if option.get("type") != "null":
            schema.update(option)
    return schema


def finetune_form(data_dir: str, models: Sequence[str], default_model: str) -> dict[str, Any]:
    """The Params of helical_finetune, in the form's order: the input file (as the workflow's), the fine-tunable
    models, then every FineTuneParams field with its bounds and choices from the contract."""
    from airflow.sdk import Param

    workflow = workflow_params(data_dir, list(models), ["local"], "local")

    def field(name: str) -> Any:
        title, description = FINETUNE_WORDS[name]
        keywords = schema_param(name, finetune_schema_of)
        default = finetune_schema_of(name).get("default", "cell_type" if name == "label_key" else None)
        if name == "label_key":
            keywords["minLength"] = 1
        return Param(default, title=title, description=description.format(**keywords), **keywords)

    return {
        "input_path": workflow["input_path"],
        "model": Param(
            default_model,
            type="string",
            enum=sorted(models, key=lambda m: m != default_model),
            title="Model",
            description="A model whose family has a helical *FineTuningModel here (docs/finetune.md).",
            errorMessage="error E807: this model cannot be fine-tuned here; fix: pick one of the listed models",
        ),
        **{name: field(name) for name in FINETUNE_WORDS},
    }


#: the comparison DAG's own Params (besides those it shares with the workflow), from CompareParams' contract
COMPARE_WORDS: dict[str, tuple[str, str]] = {
    "models": ("Models", "The models to compare (names from `helical-airflow models list`), each embedded by its own "
               "run of helical_model_workflow on its profile's queue and pool; all must read the input's kind of "
               "data (E1001 otherwise)."),
    "label_key": ("Label column", "obs column of cell labels every bio-conservation metric compares with. Empty: a "
                  "guess (e.g. cell_type), named in comparison.json."),
    "batch_key": ("Batch column", "obs column of batches: adds the batch-correction metrics (BRAS, iLISI, kBET, graph "
                  "connectivity, PCR comparison) and scIB's total (0.6 bio + 0.4 batch). Empty: bio only."),
    "max_cells": ("Cells scored at most", "Above this, a seeded, label-stratified sample is scored ({minimum} or "
                  "more)."),
}  # fmt: skip
#: the workflow's Params a comparison passes on to each model's run (the others: the model's profile)
COMPARE_SHARED = ("input_path", "shard_size", "device", "seed", "launcher")


def comparison_params(
    data_dir: str, models: Sequence[str], launchers: Sequence[str], launcher: str, default_models: Sequence[str]
) -> dict[str, Any]:
    """The Params of helical_model_comparison: the workflow's input, shard size, device, seed and launcher (the
    same Param objects, so the same checks), the models as a list of the model table's names, and the scoring's
    label column, batch column and sample size (bounds from compare.CompareParams)."""
    from airflow.sdk import Param

    shared = workflow_params(data_dir, models, launchers, launcher)
    fields = CompareParams.model_fields
    least = next(m.ge for m in fields["max_cells"].metadata if hasattr(m, "ge"))

    def words(name: str) -> dict[str, Any]:
        title, description = COMPARE_WORDS[name]
        return {"title": title, "description": description.format(minimum=least)}

    return {
        "input_path": shared["input_path"],
        "models": Param(
            list(default_models),
            type="array",
            items={"type": "string", "enum": list(models)},
            minItems=1,
            uniqueItems=True,
            **words("models"),
        ),
        "label_key": Param(None, type=["null", "string"], **words("label_key")),
        "batch_key": Param(None, type=["null", "string"], **words("batch_key")),
        "max_cells": Param(fields["max_cells"].default, type="integer", minimum=least, **words("max_cells")),
        **{name: shared[name] for name in COMPARE_SHARED if name != "input_path"},
    }
