"""bf16 against fp32 on a CPU, per model family with an offline fixture: the numbers behind agreement.DEFAULT_THRESHOLDS
(docs/reliability.md#reduced-precision-agreement).

    python bench/precision_agreement.py --cache-dir FIXTURE [--cells 256] [--families geneformer,scgpt,...]

For each family: its fixture model loaded once on the CPU, the seeded sample of data/sample.h5ad (sequence families:
data/sample_dna.fa) that a run would re-embed (agreement.Sample, seed 0) embedded in fp32 and in bf16 (torch CPU
autocast, models.runner.reduced_precision: what `--precision bf16` runs), then the run's own scores
(agreement.cosines, agreement.knn_overlap with the run's k) and the bf16/fp32 time ratio measured in the same
process. Fixture weights are tiny and random: real weights (deeper, wider, trained activations) move further.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", required=True, help="a `helical-airflow models fixture` folder")
    parser.add_argument("--cells", type=int, default=256)
    parser.add_argument("--families", default="geneformer,scgpt,nicheformer,tahoe,transcriptformer,c2s,hyena_dna,"
                        "helix_mrna,mamba2_mrna")  # fmt: skip
    args = parser.parse_args()
    os.environ["CACHE_DIR_HELICAL_PREFIX"] = str(Path(args.cache_dir).resolve())  # before helical is imported
    for family in args.families.split(","):
        try:
            print(measure(family, args.cells), flush=True)
        except Exception as exc:  # one family's failure is a finding, not the end of the table
            print(f"{family}: FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)


def measure(family: str, cells: int) -> str:
    import numpy as np

    from helical_airflow import agreement, modality
    from helical_airflow.models import get_model, registry
    from helical_airflow.spec import ShardSpec
    from helical_airflow.validate import validate_input

    spec = get_model(family)
    path = ROOT / "data" / ("sample_dna.fa" if spec.is_sequence else "sample.h5ad")
    summary = validate_input(str(path), family, None, os.environ["CACHE_DIR_HELICAL_PREFIX"])
    kind = modality.of(summary)
    sample = agreement.Sample(summary.n_cells, cells, seed=0)
    rows = kind.take(kind.read_shard(summary, 0, summary.n_cells, None), sample.within(ShardSpec(
        index=0, start=0, stop=summary.n_cells)))  # fmt: skip
    registry.check_precision(spec, "bf16")
    runner = registry.load_runner(
        spec,
        device="cpu",
        precision="fp32",
        batch_size=spec.profile.batch_size,
        engine=spec.profile.engine,
        seed=0,
        options=registry.resolve_options(spec, {}),
    )
    started = time.perf_counter()
    fp32 = agreement.embed(runner, rows, "cpu")
    fp32_s = time.perf_counter() - started
    with agreement.precision_of(runner, "bf16"):
        started = time.perf_counter()
        bf16 = agreement.embed(runner, rows, "cpu")
        bf16_s = time.perf_counter() - started
    keep = np.isfinite(fp32).all(axis=1) & np.isfinite(bf16).all(axis=1)
    cos = agreement.cosines(bf16[keep], fp32[keep])
    k = max(1, min(agreement.MAX_K, int(keep.sum()) // 10))
    overlap = agreement.knn_overlap(bf16[keep], fp32[keep], k)
    return (f"{family} ({spec.name}, dim {fp32.shape[1]}): {int(keep.sum())} {summary.unit}; cosine min "
            f"{cos.min():.7f} median {np.median(cos):.7f} (1-cos max {1 - cos.min():.2g}); kNN overlap k={k} mean "
            f"{overlap.mean():.3f} min {overlap.min():.3f}; identical {np.array_equal(bf16, fp32)}; "
            f"bf16/fp32 time {bf16_s / fp32_s:.2f} ({bf16_s:.1f} s / {fp32_s:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
