# Fixtures of the R-workflow tests (test-transfer-names.R, test-messages.R, test-project.R):
# pbmc_small's two groups integrated once per test run (a few seconds).

.hx <- new.env(parent = emptyenv())

pbmc_integrated <- function() {
    if (is.null(.hx$pbmc)) {
        p <- pbmc_pair()
        .hx$pbmc <- suppressMessages(scferry::ferry_integrate(p, max_iter = 20, progress = FALSE,
                                                              model_dir = tempfile("models")))
    }
    .hx$pbmc
}

# pbmc_small with an "ADT" assay (CITE-seq-like: 10 "proteins", counts of the same cells).
pbmc_cite <- function() {
    data("pbmc_small", package = "SeuratObject", envir = environment())
    pbmc <- suppressMessages(suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small)))
    rna <- SeuratObject::GetAssayData(pbmc, assay = "RNA", slot = "counts")
    adt <- methods::as(as.matrix(rna[1:10, , drop = FALSE]) + 1, "dgCMatrix")   # every cell has counts
    rownames(adt) <- paste0("prot", 1:10)
    pbmc[["ADT"]] <- SeuratObject::CreateAssayObject(counts = adt)
    pbmc
}
