"""Rebuild data/sample_dna.fa: 40 real human DNA records cut from the hg19 chr17 excerpt that pyfaidx ships in its
source distribution (tests/data/chr17.hg19.part.fa, 40 kb from the start of UCSC hg19 chr17; pyfaidx is
BSD-licensed, Copyright 2015 The Johns Hopkins University; the hg19 sequence itself is freely usable, UCSC).

Records are consecutive, non-overlapping pieces of 200..1000 nt (lengths from a seeded generator), soft-masked
repeats kept in lower case as in the source, ids `chr17:<start>-<end>` (1-based, inclusive, hg19), 60 nt per line.
Usage: python scripts/make_sequence_sample.py [path/to/chr17.hg19.part.fa]  (default: pip download the sdist).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SDIST = "pyfaidx==0.9.2.2"
MEMBER = "pyfaidx-0.9.2.2/tests/data/chr17.hg19.part.fa"
N_RECORDS = 40


def source_text(given: str | None) -> str:
    if given:
        return Path(given).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp],
                       check=True, capture_output=True)  # fmt: skip
        (archive,) = Path(tmp).glob("pyfaidx-*.tar.gz")
        with tarfile.open(archive) as tar:
            handle = tar.extractfile(MEMBER)
            assert handle is not None
            return handle.read().decode()


def main() -> None:
    lines = source_text(sys.argv[1] if len(sys.argv) > 1 else None).splitlines()
    assert lines[0].startswith(">chr17")
    genome = "".join(line.strip() for line in lines[1:])
    rng = np.random.default_rng(17)
    out, start = [], 0
    for _ in range(N_RECORDS):
        length = int(rng.integers(200, 1001))
        piece = genome[start : start + length]
        if len(piece) < length:
            break
        out.append(f">chr17:{start + 1}-{start + length} hg19\n")
        out += [piece[i : i + 60] + "\n" for i in range(0, len(piece), 60)]
        start += length
    (ROOT / "data" / "sample_dna.fa").write_text("".join(out))
    print(f"wrote data/sample_dna.fa: {sum(1 for x in out if x.startswith('>'))} records, {start} nt")


if __name__ == "__main__":
    main()
