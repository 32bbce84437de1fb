# ferry_transfer as Seurat users use it: NA labels, subsets, merged objects, several transfers on
# one object, numeric labels (issue 15, "R: what a Seurat user hit").

test_that("reference cells with NA labels are left out of the transfer, with a message giving the count", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- pbmc_integrated()
    ref <- objs$g1
    ref$lab <- as.character(ref$RNA_snn_res.1)
    ref$lab[1:5] <- NA
    expect_message(q <- ferry_transfer(ref, objs$g2, label = "lab"),
                   "5 of the 44 cells of reference dataset 'g1' have no label and are left out")
    labs <- sort(unique(ref$lab[!is.na(ref$lab)]))
    d <- SeuratObject::GetAssayData(q[["ferry.predictions"]], slot = "data")
    expect_identical(rownames(d), c(labs, "max"))
    expect_equal(unname(colSums(d[labs, ])), rep(1, ncol(q)), tolerance = 1e-5)
    expect_true(all(q$predicted.id %in% labs))
    # deconvolution leaves them out too: no type stands for the unlabelled cells
    expect_message(s <- suppressWarnings(ferry_deconvolve(ref, objs$g2, label = "lab")), "5 of the 44 cells")
    p <- SeuratObject::GetAssayData(s[["ferry.proportions"]], slot = "data")
    expect_identical(rownames(p), labs)
    expect_equal(unname(colSums(p)), rep(1, ncol(s)), tolerance = 1e-5)
})

test_that("subsets of integrated objects work as reference and query", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- pbmc_integrated()
    ref <- objs$g1
    ref$lab <- as.character(ref$RNA_snn_res.1)
    sub_ref <- ref[, 10:30]
    sub_q <- objs$g2[, 1:20]
    # query cells the plan links only to cells outside sub_ref: a kNN vote over sub_ref's cells
    expect_message(expect_warning(q <- ferry_transfer(sub_ref, sub_q, label = "lab"),
                                  "only to cells of 'g1' without a label; their labels are a kNN vote"),
                   "23 not in the reference object")
    expect_identical(colnames(q), colnames(sub_q))
    expect_true(all(q$predicted.id %in% unique(sub_ref$lab)))
    # the record also lives in the reduction, which subsetting keeps
    expect_identical(sub_q[["ferry"]]@misc$ferry$model_id, objs$g2@misc$ferry$model_id)
})

test_that("a merged object (merge() drops @misc) is recognised; without a live model the error explains", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- pbmc_integrated()
    m <- merge(objs$g1, objs$g2, merge.dr = "ferry")
    expect_null(m@misc$ferry)
    m$lab <- c(as.character(objs$g1$RNA_snn_res.1), rep(NA, ncol(objs$g2)))
    ref <- m[, colnames(objs$g1)]
    qry <- m[, colnames(objs$g2)]
    expect_message(q <- ferry_transfer(ref, qry, label = "lab"), "merge\\(\\) drops obj@misc")
    expect_true(all(q$predicted.id %in% unique(objs$g1$RNA_snn_res.1)))
    # the same merged object in a session without the model
    state <- scferry:::.ferry
    saved <- state$models
    state$models <- list()
    on.exit(state$models <- saved)
    expect_error(ferry_transfer(ref, qry, label = "lab"),
                 "has a 'ferry' reduction but no scferry record: merge\\(\\) drops obj@misc", class = "ferry_error")
})

test_that("prediction.name keeps two transfers apart; the default drops stale prediction.score columns", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- pbmc_integrated()
    ref <- objs$g1
    ref$coarse <- ifelse(as.character(ref$RNA_snn_res.1) == "0", "A", "B")
    ref$fine <- as.character(ref$RNA_snn_res.1)
    q <- ferry_transfer(ref, objs$g2, label = "coarse", prediction.name = "coarse")
    q <- ferry_transfer(ref, q, label = "fine", prediction.name = "fine")
    md <- q[[]]
    expect_true(all(c("predicted.coarse", "predicted.coarse.score", "predicted.fine", "predicted.fine.score")
                    %in% names(md)))
    expect_true(all(md$predicted.coarse %in% c("A", "B")))
    expect_true(all(md$predicted.fine %in% unique(ref$fine)))
    expect_true(all(c("ferry.predictions.coarse", "ferry.predictions.fine") %in% SeuratObject::Assays(q)))
    # default names: a second transfer with other labels leaves no stale prediction.score.* column
    q <- ferry_transfer(ref, q, label = "fine")
    q <- ferry_transfer(ref, q, label = "coarse")
    sc <- grep("^prediction\\.score\\.", names(q[[]]), value = TRUE)
    expect_setequal(sc, c("prediction.score.A", "prediction.score.B", "prediction.score.max"))
    expect_true("predicted.fine" %in% names(q[[]]))
})

test_that("numeric labels give prediction.score.2 (Seurat's names), not prediction.score.X2", {
    skip_if_no_seurat()
    obj <- pbmc_pair()$g2
    P <- matrix(c(0.2, 0.8), 2, ncol(obj), dimnames = list(c("2", "10"), colnames(obj)))
    out <- scferry:::.ferry_add_scores(obj, P, "predictions")
    expect_true(all(c("prediction.score.2", "prediction.score.10", "prediction.score.max") %in% names(out[[]])))
    expect_false(any(c("prediction.score.X2", "prediction.score.X10") %in% names(out[[]])))
    expect_identical(unname(out$predicted.id), rep("10", ncol(obj)))
})
