#!/usr/bin/env python
"""The TSS tables shipped with scferry (``python/scferry/tl/tss/<genome>.tsv.gz``, read by
``scferry.tl.tss_table``): one TSS per gene for hg19, hg38, mm9 and mm10, from CellOracle's
shipped TSS reference (``celloracle/motif_analysis/tss_ref_data/<genome>_tss_info.bed`` in the
CellOracle 0.20.0 wheel on PyPI; Apache-2.0; HOMER's promoter annotation of each assembly).

Each bed row is ``chrom start end gene dist strand``: a region near one of the gene's TSSs with
``dist`` = region centre minus TSS, strand-aware (as HOMER reports it), so TSS = centre - dist on
'+' and centre + dist on '-' (checked on mm10: Actb gives chr5:142,906,754 and Gapdh's two rows
both chr6:125,166,467, the RefSeq TSSs). A gene with several rows (alternative promoters, split
regions) gets its 5'-most TSS, the gene start Signac's and ArchR's gene activities use;
``tss_spread`` keeps the range.

    pip download --no-deps -d /tmp/co celloracle==0.20.0      # the wheel (12 MB), nothing installed
    python inst/scripts/make_tss_tables.py /tmp/co/celloracle-0.20.0-py3-none-any.whl \\
        python/scferry/tl/tss
"""
from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pandas as pd

GENOMES = ("hg19", "hg38", "mm9", "mm10")  # mm39's bed has no distance column: left out
BED = "celloracle/motif_analysis/tss_ref_data/{}_tss_info.bed"


def read_bed(wheel: str, genome: str) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as z:
        return pd.read_csv(io.BytesIO(z.read(BED.format(genome))), sep="\t", header=None,
                           names=["chrom", "start", "end", "gene", "dist", "strand"])


def tss_table(bed: pd.DataFrame) -> pd.DataFrame:
    """One row per gene: gene, chrom, tss (the 5'-most), strand, n_rows, tss_spread."""
    bed = bed[bed["strand"].isin(["+", "-"])]
    centre = (bed["start"] + bed["end"]) / 2
    sign = bed["strand"].map({"+": -1, "-": 1})
    bed = bed.assign(tss=centre + sign * bed["dist"])
    rows = []
    for gene, g in bed.groupby("gene", sort=True):
        chrom = g["chrom"].mode().iloc[0]  # a few genes are listed on two chromosomes (X/Y copies)
        g = g[g["chrom"] == chrom]
        strand = g["strand"].mode().iloc[0]
        five_prime = g["tss"].min() if strand == "+" else g["tss"].max()
        rows.append({"gene": gene, "chrom": chrom, "tss": int(round(five_prime)), "strand": strand,
                     "n_rows": len(g),
                     "tss_spread": int(g["tss"].max() - g["tss"].min())})
    return pd.DataFrame(rows)


def main(wheel: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for genome in GENOMES:
        table = tss_table(read_bed(wheel, genome))[["gene", "chrom", "tss", "strand"]]
        table.to_csv(out / f"{genome}.tsv.gz", sep="\t", index=False,
                     compression={"method": "gzip", "mtime": 0})
        print(f"{genome}: {len(table)} genes -> {out / f'{genome}.tsv.gz'}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
