# The paired SNARE-seq fixture (tests/data) as two objects, RNA and ATAC gene activity of the same
# nuclei (cell names repeat across the objects by design); every n-th nucleus of the fixture.
snare_paired <- function(as = c("Seurat", "SingleCellExperiment"), n = 600L) {
    as <- match.arg(as)
    rna <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_rna.h5ad"), as = as)
    atac <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_atac_gene.h5ad"), as = as)
    keep <- seq(1L, ncol(rna), length.out = n)
    list(rna = rna[, keep], atac = atac[, keep])
}
