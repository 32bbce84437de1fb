# Distributed training from R: devices / accelerator / strategy reach scferry.integrate() as they
# are (an integer, strings), and the processes Python starts from inside the call (fork on CPU)
# work under reticulate.

test_that("ferry_integrate(devices = 2) trains on two CPU processes and records it", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs0 <- pbmc_pair()
    objs <- ferry_integrate(objs0, method = "davae", devices = 2, accelerator = "cpu", strategy = "ddp",
                            max_iter = 20, progress = FALSE, verbose = FALSE, model_dir = tempfile("models"))
    rec <- objs$g1@misc$ferry
    expect_identical(rec$params$devices, 2L)
    expect_identical(rec$params$accelerator, "cpu")
    expect_identical(rec$params$strategy, "ddp")
    tp <- reticulate::py_to_r(scferry:::.ferry$models[[rec$model_id]]$model$train_params)
    expect_identical(tp$distributed$devices, 2L)
    expect_identical(tp$distributed$backend, "gloo")
    expect_identical(tp$iterations_run, 20L)
    for (n in names(objs)) {
        e <- SeuratObject::Embeddings(objs[[n]], "ferry")
        expect_identical(rownames(e), colnames(objs0[[n]]))
        expect_true(all(is.finite(e)))
    }
})

test_that("bad devices / accelerator values get the Python side's message in R terms", {
    skip_if_no_python()
    skip_if_no_seurat()
    expect_error(ferry_integrate(pbmc_pair(), method = "davae", devices = 0, progress = FALSE, verbose = FALSE),
                 "devices must be a positive integer")
    expect_error(ferry_integrate(pbmc_pair(), method = "davae", accelerator = "tpu", progress = FALSE,
                                 verbose = FALSE), "accelerator must be")
})
