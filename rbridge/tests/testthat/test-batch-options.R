# Issue 16 options of DAVAE (kl_weight, kl_warmup, likelihood, domain_grad_cap, structure_weight,
# mnn_weight) and uniPort (pair_reduction, pca_prior, pca_weight, pca_fit_weight) reach
# scferry.integrate() unchanged in shape (an integer, strings), and DAVAE's default budget is set
# from the number of cells and recorded.

test_that("ferry_integrate passes davae's kl_warmup / likelihood / domain_grad_cap and uniport's pair_reduction", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs0 <- pbmc_pair()
    objs <- ferry_integrate(objs0, method = "davae", kl_warmup = 5, likelihood = "nb", max_iter = 10,
                            progress = FALSE, verbose = FALSE, model_dir = tempfile("models"))
    rec <- objs$g1@misc$ferry
    expect_identical(rec$params$kl_warmup, 5L)
    expect_identical(rec$params$likelihood, "nb")
    params <- reticulate::py_to_r(scferry:::.ferry$models[[rec$model_id]]$model$params)
    expect_identical(params$kl_warmup, 5L)
    expect_identical(params$likelihood, "nb")
    expect_true(all(is.finite(SeuratObject::Embeddings(objs$g2, "ferry"))))

    objs <- ferry_integrate(objs0, method = "davae", domain_grad_cap = 0.5, max_iter = 4,
                            progress = FALSE, verbose = FALSE, model_dir = tempfile("models"))
    model <- scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model
    expect_identical(reticulate::py_to_r(model$params)$domain_grad_cap, 0.5)
    expect_identical(reticulate::py_to_r(model$params)$kl_weight, 0.5)  # the default

    objs <- ferry_integrate(objs0, method = "davae", kl_weight = 1, max_iter = 4,
                            progress = FALSE, verbose = FALSE, model_dir = tempfile("models"))
    model <- scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model
    expect_equal(reticulate::py_to_r(model$params)$kl_weight, 1)  # a whole number arrives as 1L
    expect_true("domain_grad_ratio" %in% names(reticulate::py_to_r(model$history)[[1]]))

    objs <- ferry_integrate(objs0, method = "davae", progress = FALSE, verbose = FALSE,
                            model_dir = tempfile("models"))
    model <- scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model
    tp <- reticulate::py_to_r(model$train_params)
    expect_identical(tp$max_iter, 500L)  # 80 cells: the budget's floor
    expect_identical(tp$iterations_run, 500L)

    objs <- suppressWarnings(ferry_integrate(objs0, method = "uniport", pair_reduction = "mean", max_iter = 5,
                                             progress = FALSE, verbose = FALSE, model_dir = tempfile("models")))
    params <- reticulate::py_to_r(scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model$params)
    expect_identical(params$pair_reduction, "mean")
    expect_error(ferry_integrate(objs0, method = "davae", likelihood = "poisson", progress = FALSE,
                                 verbose = FALSE), "likelihood must be")
    expect_error(ferry_integrate(objs0, method = "davae", domain_grad_cap = -1, progress = FALSE,
                                 verbose = FALSE), "domain_grad_cap must be a number > 0")
})

test_that("ferry_integrate passes davae's structure_weight and mnn_weight (neighbour terms)", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs0 <- pbmc_pair()
    objs <- ferry_integrate(objs0, method = "davae", structure_weight = 0.5, mnn_weight = 0.25, max_iter = 4,
                            progress = FALSE, verbose = FALSE, model_dir = tempfile("models"))
    model <- scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model
    params <- reticulate::py_to_r(model$params)
    expect_identical(params$structure_weight, 0.5)
    expect_identical(params$mnn_weight, 0.25)
    logged <- names(reticulate::py_to_r(model$history)[[1]])
    expect_true(all(c("structure", "mnn") %in% logged))
    expect_true(all(is.finite(SeuratObject::Embeddings(objs$g2, "ferry"))))
    expect_error(ferry_integrate(objs0, method = "davae", structure_weight = -1, progress = FALSE,
                                 verbose = FALSE), "structure_weight must be a finite number >= 0")
})

test_that("ferry_integrate passes uniport's pca_prior, pca_weight and pca_fit_weight (a logical, numbers)", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs0 <- pbmc_pair()
    objs <- suppressWarnings(ferry_integrate(objs0, method = "uniport", pca_prior = TRUE, pca_weight = 2,
                                             pca_fit_weight = 3, max_iter = 5, progress = FALSE, verbose = FALSE,
                                             model_dir = tempfile("models")))
    params <- reticulate::py_to_r(scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model$params)
    expect_identical(params$pca_prior, TRUE)
    expect_identical(params$pca_weight, 2L)
    expect_identical(params$pca_fit_weight, 3L)
    expect_false("pca_fit_targets" %in% names(params))
    expect_true(params$pca_fit_record$clusters >= 2)
    expect_false("pca_guidance" %in% names(params))
    expect_true(all(is.finite(SeuratObject::Embeddings(objs$g2, "ferry"))))
    expect_error(ferry_integrate(objs0, method = "uniport", pca_prior = "yes", progress = FALSE,
                                 verbose = FALSE), "pca_prior must be True")

    # the default (horizontal, no label_key) turns the guidance on, says so in R terms, records it
    ws <- character()
    objs <- withCallingHandlers(
        ferry_integrate(objs0, method = "uniport", max_iter = 5, progress = FALSE, verbose = FALSE,
                        model_dir = tempfile("models")),
        warning = function(w) { ws <<- c(ws, conditionMessage(w)); invokeRestart("muffleWarning") })
    guided <- grep("guided by the cells' distances in one PCA", ws, value = TRUE)
    expect_length(guided, 1)
    expect_match(guided, "pca_prior = FALSE", fixed = TRUE)
    expect_match(guided, "pca_fit_weight=0 turns that off", fixed = TRUE)
    params <- reticulate::py_to_r(scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model$params)
    expect_identical(params$pca_prior, TRUE)
    objs <- suppressWarnings(ferry_integrate(objs0, method = "uniport", pca_prior = FALSE, max_iter = 5,
                                             progress = FALSE, verbose = FALSE, model_dir = tempfile("models")))
    params <- reticulate::py_to_r(scferry:::.ferry$models[[objs$g1@misc$ferry$model_id]]$model$params)
    expect_identical(params$pca_prior, FALSE)
})
