#!/usr/bin/env python
"""One TSS per gene for the SNARE-seq cortex genes (mm10), from CellOracle's shipped TSS reference.

The SNARE files carry no gene positions. The source used here is
``celloracle/motif_analysis/tss_ref_data/mm10_tss_info.bed`` inside the CellOracle 0.20.0 wheel on
PyPI (Apache-2.0; HOMER's mm10 promoter annotation): rows ``chrom start end gene dist strand``,
each a region near one of the gene's TSSs with ``dist`` = region centre minus TSS, strand-aware (as
HOMER reports it). So TSS = centre - dist on '+', centre + dist on '-' (checked: Actb gives
chr5:142,906,754 and Gapdh's two rows both give chr6:125,166,467, the RefSeq TSSs). A gene with
several rows (alternative promoters, split regions) gets its 5'-most TSS, the gene start that
Signac's and ArchR's gene activities use; ``tss_spread`` keeps the range.

    pip download --no-deps -d /tmp/co celloracle==0.20.0      # the wheel (12 MB), nothing installed
    python bench/multiome/make_tss_table.py /tmp/co/celloracle-0.20.0-py3-none-any.whl \\
        ../shared/data/snare_cortex_rna.h5ad bench/multiome/snare_cortex_tss_mm10.tsv

Limits: one TSS per gene (the 5'-most; 18% of these genes have TSSs > 1 kb apart), HOMER's gene symbols
(genes under other names are left out) and mm10 coordinates (the SNARE peaks' assembly).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "inst" / "scripts"))
from make_tss_tables import read_bed, tss_table  # noqa: E402  (the shipped tables' conversion)


def main(wheel: str, rna_h5ad: str, out: str) -> None:
    import anndata as ad
    bed = read_bed(wheel, "mm10")
    genes = ad.read_h5ad(rna_h5ad, backed="r").var_names
    table = tss_table(bed[bed["gene"].isin(genes)])
    table.to_csv(out, sep="\t", index=False)
    print(f"{len(table)} of {len(genes)} genes with a TSS -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
