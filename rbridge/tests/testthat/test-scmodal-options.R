# Issue 17: scMODAL's anchor space (anchor_space, n_smooth) reaches scferry.integrate() from R
# unchanged in shape (a string, an integer) and is validated there.

test_that("ferry_integrate passes scmodal's anchor_space and n_smooth", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs0 <- pbmc_pair()
    objs <- suppressWarnings(ferry_integrate(objs0, method = "scmodal", linked = "shared", anchor_space = "cca",
                                             n_smooth = 5, max_iter = 5, progress = FALSE, verbose = FALSE,
                                             model_dir = tempfile("models")))
    params <- reticulate::py_to_r(scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model$params)
    expect_identical(params$anchor_space, "cca")
    expect_identical(params$n_smooth, 5L)
    expect_true(all(is.finite(SeuratObject::Embeddings(objs$g2, "ferry"))))
    expect_error(ferry_integrate(objs0, method = "scmodal", anchor_space = "pca", progress = FALSE,
                                 verbose = FALSE), "anchor_space must be one of")
})
