"""How do the pipeline's steps grow from 100,000 to 1,000,000 cells?

Writes synthetic inputs (bench/synth.py, sparse draw: the fixture genes, ~50 genes per cell, a `cell_type`
label) and runs every step of the pipeline on each, in a fresh process per step, with a small fixture model
that runs a network per cell (Geneformer's; docs/benchmarks.md says why not GenePT's): validate, plan, embed
(all shards, one model load; relaunched for the shards left when the runner asks to be recycled, as every
launcher does), merge, quality gate, report. For each step it prints the wall time and the peak RSS the kernel
reports for that process (ru_maxrss from wait4, in a small launcher: memory.LAUNCHER),
beside the same at the small size.

Targets (issue 20): at the large size, every step but embed takes at most 10% of the embed step's time, and
every step's peak memory at the large size is at most 1.2x its peak at the small size. Exits 1 when a target is
missed.

    nice -n 5 .venv/bin/python bench/scale.py [--small 100000] [--large 1000000] [--model geneformer]
                                               [--shard-size 50000] [--work DIR] [--cache-dir DIR]
    .venv/bin/python bench/scale.py --phase embed ...    # validate, plan, embed only (results kept in --work)
    .venv/bin/python bench/scale.py --phase finish ...   # merge, quality gate, report on the embedded shards
    .venv/bin/python bench/scale.py --phase prepare ...  # validate and plan again (the shards stay valid)

validate is `helical-airflow validate --json`; plan is the DAG's plan task, plan.make_plan from validate's summary
(`helical-airflow plan INPUT` validates the input again first, so its time would count validation twice).

Why separate processes rather than `helical-airflow run` or the Airflow stack: each step's peak memory is only
measurable per process (ru_maxrss is a high-water mark: in one process every step after the biggest would read
the biggest). The steps are the functions the CLI and the DAG's tasks call (`helical-airflow validate`, `plan`,
`embed-shard`; store.merge, quality.quality_gate, report.write_report, what `helical-airflow merge` and the DAG's
merge / quality_gate / publish tasks run), so the figures are the pipeline's own; the stack adds scheduling
around them (bench/overhead.py measures that). `--phase` lets the embed step (the long one) and the steps after
it run at different times; results accumulate in WORK/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import cli, measured_child  # noqa: E402
from synth import fixture_genes, write_synthetic_h5ad  # noqa: E402

STEPS = ("validate", "plan", "embed", "merge", "quality", "report")
EMBED_PHASE, FINISH_PHASE = STEPS[:3], STEPS[3:]
MAX_SHARE_OF_EMBED = 0.10
MAX_MEMORY_RATIO = 1.2
RECYCLE_EXIT = 75  # embed-shard: "start a fresh process for the shards left" (cli.RECYCLE_EXIT)


def measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB from the kernel, stdout) of one step's process (memory.measured_child: its own
    peak, not this bench's); exit code 75 (recycling) is allowed."""
    child = measured_child(command, env)
    if child.code not in (0, RECYCLE_EXIT):
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({child.code}):\n{child.stderr[-3000:]}")
    return child.seconds, child.peak_rss_mb, child.stdout


def step_child(step: str, plan_file: str, args: argparse.Namespace) -> None:
    """plan or a step after embed, in this (fresh) process: the library functions the CLI and the DAG call, each
    step importing only its own module (importing all of them made each step pay for the others' imports)."""
    from helical_airflow.plan import load_plan, make_plan

    if step == "plan":  # as the DAG's plan task: from validate's summary (`helical-airflow plan` validates again)
        from helical_airflow.spec import InputSummary, RunParams

        summary = InputSummary.model_validate_json(Path(plan_file).read_text())
        params = RunParams(model=args.model, shard_size=args.shard_size, cache_dir=args.cache_dir, device="cpu")
        print(make_plan(summary, params, args.work / "outputs").plan_file)
        return
    plan = load_plan(plan_file)
    if step == "merge":
        from helical_airflow.store import merge

        merge(plan)
    elif step == "quality":
        from helical_airflow.quality import quality_gate

        quality_gate(plan)
    else:
        from helical_airflow.report import write_report

        write_report(plan)


def run_steps(work: Path, n_cells: int, phase: str, args: argparse.Namespace, figures: dict) -> None:
    path = work / f"synthetic_{n_cells}.h5ad"
    row = figures.setdefault(str(n_cells), {"cells": n_cells, "steps": {}})
    if not path.is_file():
        started = time.perf_counter()
        write_synthetic_h5ad(path, n_cells, fixture_genes(), genes_per_cell=args.genes_per_cell, seed=args.seed,
                             draw="sparse")  # fmt: skip
        row["write_s"] = round(time.perf_counter() - started, 1)
    row["file_mb"] = round(path.stat().st_size / 2**20, 1)
    common = ["--model", args.model, "--cache-dir", args.cache_dir]
    steps = row["steps"]
    if phase in ("all", "embed", "prepare"):
        s, mb, out = measured(cli() + ["validate", str(path), *common, "--json"])
        steps["validate"] = {"seconds": s, "peak_rss_mb": mb}
        summary = work / f"summary_{n_cells}.json"
        summary.write_text(out)
        if row.get("plan_file"):
            Path(row["plan_file"]).unlink(missing_ok=True)  # planned again (same key: the shards stay valid)
        command = [sys.executable, str(Path(__file__).resolve()), "--step", "plan", "--plan", str(summary),
                   "--model", args.model, "--cache-dir", args.cache_dir, "--shard-size", str(args.shard_size),
                   "--work", str(work)]  # fmt: skip
        s, mb, out = measured(command)
        steps["plan"] = {"seconds": s, "peak_rss_mb": mb}
        row["plan_file"] = out.strip().splitlines()[-1]
        plan = json.loads(Path(row["plan_file"]).read_text())
        row["shards"] = len(plan["shards"])
    if phase in ("all", "embed"):
        total, peak, processes = 0.0, 0.0, 0
        left = [str(shard["index"]) for shard in plan["shards"]]
        while left:
            flags = [flag for index in left for flag in ("--shard", index)]
            s, mb, _ = measured(cli() + ["embed-shard", "--plan", row["plan_file"], *flags])
            total, peak, processes = total + s, max(peak, mb), processes + 1
            done = {p.stem for p in Path(plan["out_dir"], "shards").glob("*.npy")}
            left = [index for index in left if index not in done]
        steps["embed"] = {"seconds": total, "peak_rss_mb": peak, "processes": processes}
    if phase in ("all", "finish"):
        env = {**os.environ, "HELICAL_AIRFLOW_REPORT_UMAP": "1" if args.umap else "0"}
        for step in FINISH_PHASE:
            command = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--plan", row["plan_file"]]
            s, mb, _ = measured(command, env)
            steps[step] = {"seconds": s, "peak_rss_mb": mb}
        out_dir = Path(row["plan_file"]).parent
        quality = json.loads((out_dir / "quality.json").read_text())
        row["quality"] = {
            k: quality.get(k)
            for k in ("passed", "scored_cells", "score_sample_cells", "cosine_sample_cells", "embedding_scores")
        }
    row["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")


def verdict(figures: dict, small: int, large: int) -> bool:
    lo, hi = figures[str(small)]["steps"], figures[str(large)]["steps"]
    print(f"\n{'step':<10} {small:>12,} cells s   MB {large:>12,} cells s   MB  share of embed  memory ratio")
    ok = True
    embed_s = hi.get("embed", {}).get("seconds")
    for step in STEPS:
        if step not in lo or step not in hi:
            print(f"{step:<10} not measured at both sizes")
            ok = False
            continue
        a, b = lo[step], hi[step]
        share = b["seconds"] / embed_s if embed_s and step != "embed" else None
        ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
        share_ok = share is None or share <= MAX_SHARE_OF_EMBED
        ratio_ok = ratio <= MAX_MEMORY_RATIO
        ok = ok and share_ok and ratio_ok
        share_text = f"{share:7.1%} {'PASS' if share_ok else 'FAIL'}" if share is not None else "      -     "
        print(f"{step:<10} {a['seconds']:>16.1f} {a['peak_rss_mb']:>6.0f} {b['seconds']:>16.1f} "
              f"{b['peak_rss_mb']:>6.0f}  {share_text}  {ratio:6.3f} {'PASS' if ratio_ok else 'FAIL'}")  # fmt: skip
    print(f"targets: every step but embed <= {MAX_SHARE_OF_EMBED:.0%} of embed's time at {large:,} cells; "
          f"peak memory at {large:,} <= {MAX_MEMORY_RATIO}x at {small:,}: {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument(
        "--model",
        default="geneformer",
        help="fixture model (default geneformer: a small fixture that runs a network per cell; genept's is a "
        "lookup-average whose embed is nearly all start-up: docs/benchmarks.md)",
    )
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--genes-per-cell", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--umap", action="store_true", help="the report's UMAP too (sampled: report.MAX_UMAP_POINTS)")
    parser.add_argument(
        "--phase",
        choices=("all", "embed", "finish", "prepare"),
        default="all",
        help="embed: validate, plan, embed; finish: merge, quality, report; prepare: validate, plan",
    )
    parser.add_argument("--sizes", choices=("both", "small", "large"), default="both")
    parser.add_argument("--work", type=Path, help="inputs, outputs and scale.json (default: a temporary folder)")
    parser.add_argument("--cache-dir", help="weights cache; default: build the offline fixture cache in WORK")
    parser.add_argument("--step", choices=("plan", *FINISH_PHASE), help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        step_child(args.step, args.plan, args)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="helical-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.cache_dir is None:
        args.cache_dir = str(work / "fixture_cache")
        if not Path(args.cache_dir, "FIXTURE.json").is_file():  # --model takes the registry's name (geneformer)
            subprocess.run(cli() + ["models", "fixture", "--out", args.cache_dir, "--model", args.model], check=True)
    results_file = work / "scale.json"
    figures = json.loads(results_file.read_text()) if results_file.is_file() else {}
    sizes = {"both": (args.small, args.large), "small": (args.small,), "large": (args.large,)}[args.sizes]
    for n_cells in sizes:
        run_steps(work, n_cells, args.phase, args, figures)
        results_file.write_text(json.dumps(figures, indent=1))
        for step, f in figures[str(n_cells)]["steps"].items():
            print(f"{n_cells:>9,} cells  {step:<9} {f['seconds']:8.1f} s  {f['peak_rss_mb']:7.0f} MB")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}; model {args.model} (fixture), shard size {args.shard_size}")  # fmt: skip
    print(f"figures: {results_file}")
    if str(args.small) in figures and str(args.large) in figures and not verdict(figures, args.small, args.large):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
