# What an R user is told: Python warnings as R warnings, the choices a fit made, errors in R terms
# (issue 15, "R: what a Seurat user hit").

test_that("Python warnings are R warnings (withCallingHandlers, suppressWarnings), not stderr text", {
    skip_if_no_python()
    skip_if_no_seurat()
    p <- pbmc_pair()
    # the two groups share no feature names: uniPort chooses its diagonal mode and warns
    m2 <- SeuratObject::GetAssayData(p$g2, slot = "counts")
    rownames(m2) <- paste0("other-", rownames(m2))
    g2 <- SeuratObject::CreateSeuratObject(counts = m2)
    seen <- list()
    msgs <- character()
    objs <- withCallingHandlers(
        ferry_integrate(list(g1 = p$g1, g2 = g2), max_iter = 5, progress = FALSE),
        warning = function(w) {
            seen[[length(seen) + 1L]] <<- w
            invokeRestart("muffleWarning")
        },
        message = function(m) {
            msgs <<- c(msgs, conditionMessage(m))
            invokeRestart("muffleMessage")
        })
    expect_true(length(seen) >= 1L)
    expect_true(any(vapply(seen, inherits, TRUE, "ferry_warning")))
    expect_true(any(grepl("share no feature names", vapply(seen, conditionMessage, ""))))
    # the message says which mode was chosen
    expect_true(any(grepl("mode = 'diagonal'", msgs)))
    # no labels: the default diagonal call is guided by the Gromov-Wasserstein alignment, and says so
    expect_true(any(grepl("Gromov-Wasserstein match of their geometries", msgs)))
    expect_true(any(grepl("its encoders learn the match's coordinates, gw_fit_weight = 1", msgs,
                          fixed = TRUE)))
    # and its embedding is the direction of the latent means: announced too
    expect_true(any(grepl("the embedding is the direction of each cell's latent mean",
                          c(msgs, vapply(seen, conditionMessage, "")), fixed = TRUE)))
    expect_silent(suppressMessages(suppressWarnings(
        ferry_integrate(list(g1 = p$g1, g2 = g2), max_iter = 5, progress = FALSE))))
})

test_that("ferry_integrate says which mode was chosen and how many genes were used", {
    skip_if_no_python()
    skip_if_no_seurat()
    p <- pbmc_pair()
    expect_message(ferry_integrate(p, max_iter = 5, progress = FALSE),
                   "method 'uniport' fitted on 'g1' \\(44 cells\\), 'g2' \\(36 cells\\); mode = 'horizontal'.*; [0-9,]+ genes shared")
    # verbose = FALSE: no message (the Python warnings about choices and OT convergence remain)
    expect_silent(suppressWarnings(ferry_integrate(p, max_iter = 5, progress = FALSE, verbose = FALSE)))
})

test_that("the fit message prints whatever model.choices records (value and reason)", {
    skip_if_no_python()
    sf <- scferry:::.ferry_require_python()
    main <- reticulate::import_main(convert = FALSE)
    reticulate::py_run_string(paste(
        "class _FakeModel:",
        "    method = 'uniport'",
        "    params = {'mode': 'diagonal'}",
        "    choices = {'mode': {'value': 'gw', 'reason': 'unpaired RNA + ATAC without shared features'}}",
        "    class preprocessing:",
        "        common_genes = []",
        sep = "\n"))
    m <- main$`_FakeModel`()
    msg <- scferry:::.ferry_fit_message(m, list(rna = matrix(0, 2, 3), atac = matrix(0, 2, 4)))
    expect_match(msg, "mode = 'gw' \\(unpaired RNA \\+ ATAC without shared features\\)")
    expect_match(msg, "0 genes shared")
})

test_that("an empty counts layer: the error says raw counts are needed and where they usually are", {
    skip_if_no_seurat()
    p <- pbmc_pair()
    # an object made from normalised values only: its counts layer is empty
    lognorm <- SeuratObject::GetAssayData(p$g1, slot = "data")
    p$g1 <- suppressWarnings(SeuratObject::CreateSeuratObject(SeuratObject::CreateAssayObject(data = lognorm)))
    expect_error(ferry_integrate(p, progress = FALSE),
                 "is empty; scferry needs the raw \\(unnormalised\\) counts.*GetAssayData\\(obj, assay = 'RNA', slot = \"counts\"\\)",
                 class = "ferry_error")
})

test_that("SingleCellExperiment without a counts assay: the error says counts(sce)", {
    skip_if_no_sce()
    skip_if_no_seurat()
    p <- pbmc_sce_pair()
    for (n in names(p)) SummarizedExperiment::assay(p[[n]], "counts") <- NULL
    expect_error(ferry_integrate(p, progress = FALSE), "raw \\(unnormalised\\) counts, usually counts\\(sce\\)",
                 class = "ferry_error")
})

test_that("scaled data passed as counts: an R error naming the layer the user set, not '.X'", {
    skip_if_no_seurat()
    p <- pbmc_pair()
    for (n in names(p)) p[[n]] <- suppressMessages(Seurat::ScaleData(p[[n]], features = rownames(p[[n]]), verbose = FALSE))
    err <- tryCatch(ferry_integrate(p, layer = "scale.data", progress = FALSE), error = function(e) e)
    expect_s3_class(err, "ferry_error")
    expect_match(conditionMessage(err), "layer \\(slot\\) 'scale.data' of assay 'RNA' in 'g1' has [0-9]+ negative value")
    expect_match(conditionMessage(err), "GetAssayData\\(obj, slot = \"counts\"\\)")
    expect_false(grepl(".X", conditionMessage(err), fixed = TRUE))
})

test_that("Python messages about .X are said in R terms", {
    msg <- "dataset 'g1' has 3 negative values. scferry expects raw counts in .X (or layer=...): pass counts"
    out <- scferry:::.ferry_r_terms(msg, "layer (slot) 'data' of assay 'RNA'")
    expect_false(grepl(".X", out, fixed = TRUE))
    expect_match(out, "raw counts in layer \\(slot\\) 'data' of assay 'RNA': pass")
    msg <- "dataset 'adt' has 8 cells with zero counts. Filter them first: sc.pp.filter_cells(adata, min_counts=1)."
    out <- scferry:::.ferry_r_terms(msg, "layer (slot) 'counts' of assay 'ADT'")
    expect_match(out, "subset(obj, subset = nCount_<assay> > 0)", fixed = TRUE)
    expect_false(grepl("sc.pp", out, fixed = TRUE))
})

test_that("a one-cell dataset is a clear R error before Python training", {
    skip_if_no_seurat()
    p <- pbmc_pair()
    p$g2 <- p$g2[, 1]
    expect_error(ferry_integrate(p, progress = FALSE),
                 "dataset\\(s\\) 'g2' hold a single cell; integration .* needs at least 2 cells per dataset",
                 class = "ferry_error")
})

test_that("RETICULATE_PYTHON pointing nowhere: the advice says to unset it", {
    r <- fresh_python_ok(env = "RETICULATE_PYTHON=/nonexistent/bin/python")
    expect_false(r$ok)
    expect_identical(r$source, "RETICULATE_PYTHON")
    expect_match(r$reason, "takes precedence over every scferry setting")
    expect_match(r$reason, "Sys.unsetenv(\"RETICULATE_PYTHON\")", fixed = TRUE)
    expect_identical(r$init, "FALSE")
})

test_that("ferry_integrate passes method parameters through unchanged in shape", {
    pp <- scferry:::.ferry_method_params(list(max_iter = 20, lr = 0.5, specific_genes = list(rna = list("CD3E"), st = c("A", "B")),
                                              weights = list(a = 3), mode = "horizontal", flag = TRUE,
                                              eps = I(2)))
    expect_identical(pp$max_iter, 20L)
    expect_identical(pp$lr, 0.5)
    expect_identical(pp$weights, list(a = 3L))
    expect_identical(pp$eps, 2)
    expect_identical(pp$specific_genes, list(rna = list("CD3E"), st = c("A", "B")))
    skip_if_no_python()
    scferry:::.ferry_require_python()
    py <- reticulate::r_to_py(pp)
    type_of <- function(x) reticulate::py_eval("lambda x: type(x).__name__")(x)
    g <- reticulate::py_get_item(py, "specific_genes")
    expect_identical(type_of(reticulate::py_get_item(g, "rna")), "list")
    expect_identical(type_of(reticulate::py_get_item(g, "st")), "list")
    expect_identical(type_of(reticulate::py_get_item(py, "max_iter")), "int")
    expect_identical(type_of(reticulate::py_get_item(py, "lr")), "float")
    expect_identical(type_of(reticulate::py_get_item(py, "weights")), "dict")
    expect_identical(type_of(reticulate::py_get_item(py, "mode")), "str")
})
