"""Embed one shard: read its rows from the .h5ad, run the model, write shards/<i>.npy atomically.

This is what every launcher runs (`helical-airflow embed-shard --plan PLAN --shard I`), normally in a
process of its own so that memory is given back after every shard.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import psutil

from . import agreement, gpus, modality, objstore, settings, shardlock, telemetry
from .errors import ConfigError, HelicalAirflowError, ShardError
from .logs import log_context
from .models import ModelRunner, cache, get_model, registry
from .plan import weights_checksum
from .spec import Plan, Precision, ShardResult
from .store import batch_size, finished_result, save_npy, write_json

log = logging.getLogger(__name__)

FIXTURE_WARNING = "FIXTURE model: random weights from `models fixture`; embeddings carry no biology"
#: run keys whose fixture warning this process has logged: once per run and process, not once per shard (the
#: sample job printed it 3 times, once per shard; a task of the DAG is a process of its own and logs it once)
_FIXTURE_WARNED: set[str] = set()


def use_cache_dir(cache_dir: str | None) -> None:
    """Point helical at the weights cache. helical reads the variable once, when first imported."""
    if cache_dir is None:
        return
    wanted = os.path.abspath(cache_dir)
    current = settings.helical_cache_prefix()
    if "helical" in sys.modules and current != wanted:
        raise ConfigError(
            "E207",
            f"helical was already imported with cache {current!r}, cannot switch to {wanted!r}",
            "run each cache in its own process (helical-airflow embed-shard does this)",
        )
    settings.export("CACHE_DIR_HELICAL_PREFIX", wanted)


def shard_cache_dir(plan: Plan) -> str | None:
    """Where this process reads the plan's weights: the worker's own cache (HELICAL_AIRFLOW_WORKER_CACHE_DIR: workers
    that share no disk, each with its weights) when set, else the cache the plan was made with. The worker's cache
    must hold every weights file the plan lists (E532), each with the plan's sha256 (E533: the same names can hold
    other weights). A worker reads each file once for that: cache.file_sha256 remembers its digest."""
    own = settings.get().worker_cache_dir
    if own is None or os.path.abspath(own) == os.path.abspath(plan.params.cache_dir or os.sep):
        return plan.params.cache_dir
    root = cache.models_dir(own)
    missing = sorted(name for name in plan.weights_files if not (root / name).is_file())
    if missing:
        raise ConfigError(
            "E532",
            f"the weights cache {own} of this worker lacks {len(missing)} file(s) of the plan (first: {missing[0]})",
            f"put the weights there on this worker (helical-airflow models download --cache-dir {own}, or models "
            "fixture for tests), or unset HELICAL_AIRFLOW_WORKER_CACHE_DIR to read the plan's cache",
        )
    differ = _other_weights(plan, own)
    if differ:
        name, planned, found = differ[0]
        raise ConfigError(
            "E533",
            f"the weights cache {own} of this worker holds other weights than the plan in {len(differ)} file(s) "
            f"(first: {name}, sha256 {found[:12]} where the plan has {planned[:12]})",
            f"replace them with the plan's weights on this worker (delete {cache.models_dir(own) / name} and run "
            f"helical-airflow models download --cache-dir {own}, or build the plan's fixture for tests), or unset "
            "HELICAL_AIRFLOW_WORKER_CACHE_DIR to read the plan's cache",
        )
    return own


def _other_weights(plan: Plan, own: str) -> list[tuple[str, str, str]]:
    """(file, the plan's sha256, this cache's) for each weights file of the plan whose bytes differ here. A plan
    written before per-file checksums (2026-12-01) is compared by its one checksum over every file."""
    root = cache.models_dir(own)
    if plan.weights_files:
        found = {name: cache.file_sha256(root, name) for name in sorted(plan.weights_files)}
        return [(name, plan.weights_files[name], digest) for name, digest in found.items()
                if digest != plan.weights_files[name]]  # fmt: skip
    files = registry.weights_files(get_model(plan.params.model), plan.params.options, own)
    whole, _ = weights_checksum(files, root)
    return [] if whole == plan.weights_checksum else [("(all files)", plan.weights_checksum, whole)]


def resolve_device(requested: str, gpu_policy: str, fixture: bool = False) -> str:
    """cpu or cuda for this shard.

    A profile that requires a GPU (a model too large for a CPU in useful time) runs on a CPU only when asked for
    by name (`--device cpu`) or with a fixture cache (tiny random models); otherwise E206. Families whose helical
    code cannot run on a CPU at all fail with E228 in models.registry, whatever is asked.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise ConfigError("E205", "--device cuda asked for, but torch sees no CUDA GPU", "use --device cpu or auto")
    device = "cuda" if requested == "cuda" or (requested == "auto" and has_cuda) else "cpu"
    if gpu_policy == "required" and device == "cpu":
        if not (requested == "cpu" or fixture):
            raise ConfigError(
                "E206", "this model's resource profile requires a GPU and none is available",
                "run it on a gpu worker (the DAG routes it to the gpu queue), or pass --device cpu to run it on "
                "a CPU anyway (slow for real weights)",
            )  # fmt: skip
        log.warning("this model's profile asks for a GPU; running on the CPU (%s)",
                    "fixture cache" if fixture else "--device cpu")  # fmt: skip
    return device


def effective_precision(device: str, requested: Precision, cpu: Precision = "fp32") -> Precision:
    """A GPU runs the requested precision; a CPU runs `cpu` (ResolvedParams.cpu_precision): fp32, or bf16 when it
    was asked for by name (torch autocasts bf16 on a CPU; fp16 there is slower and less accurate)."""
    return requested if device == "cuda" else cpu


def runner_for(plan: Plan, device: str) -> ModelRunner[Any]:
    """The plan's model, loaded through helical with the plan's resolved parameters (the batch size halved after a
    memory-cap stop, store.batch_size)."""
    use_cache_dir(shard_cache_dir(plan))
    params = plan.params
    batch = batch_size(plan)
    if batch != params.batch_size:
        log.warning("batch size %d instead of the plan's %d: an earlier attempt went past the memory cap (E305)",
                    batch, params.batch_size)  # fmt: skip
    return registry.load_runner(
        get_model(params.model),
        device=device,
        precision=effective_precision(device, params.precision, params.cpu_precision),
        batch_size=batch,
        engine=params.engine,
        seed=params.seed,
        options=params.options,
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@shardlock.one_writer_per_shard  # a retry waits while an earlier attempt of the shard still runs
def embed_shard(
    plan: Plan,
    index: int,
    runner: ModelRunner[Any] | None = None,
    device: str | None = None,
    load_seconds: float = 0.0,
) -> ShardResult:
    """Embed shard `index` of `plan` (reusing it if already done).

    Pass a loaded runner (with its device and the seconds its loading took) to reuse one model for many shards.
    Every log line made meanwhile carries the run key, shard, model and dataset (logs.py).
    """
    with log_context(run_key=plan.run_key, shard=index, model=plan.params.model, dataset=plan.dataset):
        return _embed_shard(plan, index, runner, device, load_seconds)


def _embed_shard(
    plan: Plan, index: int, runner: ModelRunner[Any] | None, device: str | None, load_seconds: float
) -> ShardResult:
    if not 0 <= index < len(plan.shards):
        raise ConfigError("E208", f"shard {index} is not in this plan (0..{len(plan.shards) - 1})", "check --shard")
    done = finished_result(plan, index)
    if done is not None:
        log.info("shard %d already finished, reusing %s", index, plan.shard_file(index))
        return done.model_copy(update={"reused": True})
    if plan.fixture and plan.run_key not in _FIXTURE_WARNED:
        _FIXTURE_WARNED.add(plan.run_key)
        log.warning(FIXTURE_WARNING)
    shard = plan.shards[index]
    try:
        if runner is None:
            device = resolve_device(plan.params.device, get_model(plan.params.model).profile.gpu, plan.fixture)
            started = time.perf_counter()
            runner = runner_for(plan, device)
            load_seconds = time.perf_counter() - started
        device = device or "cpu"
        _reset_peak_gpu(device)
        started = time.perf_counter()
        source = objstore.ensure_input(plan.input)  # an s3://... input: staged here too when this worker lacks it
        rows = modality.of(source).read_shard(source, shard.start, shard.stop, plan.params.layer)
        embeddings = agreement.embed(runner, rows, device)
        seconds = time.perf_counter() - started
        if embeddings.shape[0] != shard.cells:
            raise ShardError(
                "E302",
                f"model returned {embeddings.shape[0]} rows for {shard.cells} cells in shard {index}",
                "report this as a bug with the manifest attached",
            )
        save_npy(plan.shard_file(index), embeddings)
        precision = effective_precision(device, plan.params.precision, plan.params.cpu_precision)
        # fp16/bf16: this shard's rows of the agreement sample again in fp32, with the model loaded here (why here:
        # agreement.py); written before the shard's record, which marks it finished
        sampled = agreement.reembed_sample(plan, shard, rows, runner, device, precision)
    except HelicalAirflowError as exc:
        telemetry.emit_failure(plan, exc.code)
        raise
    except MemoryError as exc:
        telemetry.emit_failure(plan, "E303")
        raise ShardError("E303", f"out of memory in shard {index}", "lower --shard-size or --batch-size") from exc
    except Exception as exc:
        telemetry.emit_failure(plan, "E301")
        raise ShardError(
            "E301", f"shard {index} failed: {type(exc).__name__}: {exc}", "see the log above; retry resumes"
        ) from exc
    result = ShardResult(
        index=index,
        start=shard.start,
        stop=shard.stop,
        cells=shard.cells,
        embedding_dim=int(embeddings.shape[1]),
        seconds=round(seconds, 4),
        model_load_seconds=round(load_seconds, 4),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        peak_gpu_mb=_peak_gpu_mb(device),
        device=device,
        gpu=_gpu_id(device),
        precision=precision,
        engine=plan.params.engine,
        batch_size=getattr(runner, "batch_size", None) or batch_size(plan),
        host=socket.gethostname(),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        agreement_cells=sampled,
        **_canonical_genes(runner),
    )
    write_json(plan.shard_result_file(index), result)
    telemetry.emit_shard(plan, result)
    return result


def _canonical_genes(runner: Any) -> dict[str, Any]:
    """The hash and count of the genes a cell runner saw in the shard it just embedded (none for sequences)."""
    genes = getattr(runner, "canonical_genes", None)
    return {} if genes is None else {"canonical_genes_sha256": genes.sha256, "canonical_genes": genes.count}


class Recycle(NamedTuple):
    """When a long-running embed process hands over to a fresh one (memory is given back only by exiting)."""

    max_rss_mb: float = 0.0  # current RSS past which the process stops after the shard it is on; 0: no bound
    max_shards: int = 0  # shards embedded (not reused) after which it stops; 0: no bound

    def due(self, done: int) -> tuple[bool, float]:
        """After a shard (`done` shards worked on, not reused, in this process): collect its garbage, then (whether
        to stop now, the RSS in MB).

        Why collect here: a shard's input AnnData and the model's intermediate objects sit in reference cycles, so
        they are freed only by a full garbage collection, which Python runs rarely; several shards' arrays piled
        up between collections and the process grew by ~20 MB per 50,000-cell shard. Measured on the Geneformer
        fixture, 1,000,000 cells, one process: peak RSS 1,139 MB after shard 0 to 1,585 MB after shard 19 (1.26x
        the 100,000-cell peak: bench/scale.py's memory target failed); with this collection the RSS stays at
        ~1,055 MB from shard 1 on (peak 1,142 MB after 10 shards against 1,340 without). A full collection costs
        tens of milliseconds against seconds per shard."""
        gc.collect()
        rss_mb = psutil.Process().memory_info().rss / 2**20
        over_memory = bool(self.max_rss_mb) and rss_mb > self.max_rss_mb
        return over_memory or (bool(self.max_shards) and done >= self.max_shards), rss_mb


def embed_shards(
    plan: Plan, indices: Sequence[int], recycle: Recycle = Recycle(),
    on_shard: Callable[[Plan, ShardResult], None] | None = None,
) -> tuple[list[ShardResult], list[int]]:  # fmt: skip
    """Embed these shards of `plan` in this process, loading the model once, and only if one of them needs it.

    Each shard is checkpointed on its own (shards/<i>.npy + .json, atomically) and reused when already done. When
    `recycle` says so the loop stops after a shard and returns the indices still to do, so a caller can start a
    fresh process for them: a model that leaks memory never grows past its bound. Returns (results, left).
    """
    results: list[ShardResult] = []
    runner: ModelRunner[Any] | None = None
    device: str | None = None
    embedded = 0
    for position, index in enumerate(indices):
        load_seconds = 0.0  # charged to the shard that needed the model first
        if runner is None and finished_result(plan, index) is None:
            use_cache_dir(shard_cache_dir(plan))
            device = resolve_device(plan.params.device, get_model(plan.params.model).profile.gpu, plan.fixture)
            started = time.perf_counter()
            runner = runner_for(plan, device)
            load_seconds = time.perf_counter() - started
            telemetry.emit_model_load(plan, device)
            log.info("model %s loaded on %s in %.1fs", plan.params.model, device, load_seconds)
        result = embed_shard(plan, index, runner=runner, device=device, load_seconds=load_seconds)
        results.append(result)
        if on_shard:
            on_shard(plan, result)
        if result.reused:
            continue
        embedded += 1
        stop, rss_mb = recycle.due(embedded)  # a reused shard made no garbage to collect and no reason to stop
        left = list(indices[position + 1 :])
        if left and stop:
            log.info("recycling the embed process after %d shard(s) (RSS %.0f MB, bound %.0f MB; %d shard(s) left)",
                     embedded, rss_mb, recycle.max_rss_mb, len(left))  # fmt: skip
            return results, left
    return results, []


def _reset_peak_gpu(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def _gpu_id(device: str) -> str | None:
    """The machine's id (as `nvidia-smi -L` numbers it) of the GPU this process computes on: the one its launcher
    leased (HELICAL_AIRFLOW_GPU_ID; in a container torch numbers its one GPU 0 whatever the host's id); else the one
    the NVIDIA runtime gave the container (NVIDIA_VISIBLE_DEVICES: a Kubernetes pod's device plugin pick), None when
    it gave several (their order inside is not theirs); else torch's index mapped through CUDA_VISIBLE_DEVICES."""
    if device != "cuda":
        return None
    leased = settings.get().env("HELICAL_AIRFLOW_GPU_ID").strip()
    if leased:
        return leased
    given = [d.strip() for d in settings.get().env("NVIDIA_VISIBLE_DEVICES").split(",") if d.strip()]
    if given and given[0] not in ("all", "none", "void"):
        return given[0] if len(given) == 1 else None
    import torch

    index = torch.cuda.current_device()
    visible = gpus.visible_devices() or ()
    return visible[index] if index < len(visible) else str(index)


def _peak_gpu_mb(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1)
