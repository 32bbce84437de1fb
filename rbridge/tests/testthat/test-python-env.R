test_that("ferry_python_ok() answers without starting Python", {
    out <- run_fresh_r(c(
        "ok <- scferry::ferry_python_ok()",
        "cat('OK=', isTRUE(ok), '\\n', sep = '')",
        "cat('INIT=', reticulate::py_available(initialize = FALSE), '\\n', sep = '')",
        "cat('PY=', attr(ok, 'python'), '\\n', sep = '')"))
    expect_true(any(grepl("^INIT=FALSE$", out)), info = paste(out, collapse = "\n"))
    expect_true(any(grepl("^OK=(TRUE|FALSE)$", out)), info = paste(out, collapse = "\n"))
})

test_that("ferry_python_ok() is FALSE with a reason for a missing interpreter", {
    out <- run_fresh_r(c(
        "ok <- scferry::ferry_python_ok()",
        "cat('OK=', isTRUE(ok), '\\n', sep = '')",
        "cat('REASON=', attr(ok, 'reason'), '\\n', sep = '')",
        "cat('INIT=', reticulate::py_available(initialize = FALSE), '\\n', sep = '')"),
        env = "RETICULATE_PYTHON=/nonexistent/bin/python")
    txt <- paste(out, collapse = "\n")
    expect_match(txt, "OK=FALSE")
    expect_match(txt, "/nonexistent/bin/python", fixed = TRUE)
    expect_match(txt, "ferry_setup()", fixed = TRUE)
    expect_match(txt, "INIT=FALSE")
})

test_that("a user function fails with set-up instructions when the environment is missing", {
    out <- run_fresh_r(c(
        "data('pbmc_small', package = 'SeuratObject')",
        "x <- list(a = pbmc_small[, 1:40], b = pbmc_small[, 41:80])",
        "r <- tryCatch(scferry::ferry_integrate(x), error = conditionMessage)",
        "cat('ERR=', r, '\\n', sep = '')"),
        env = "SCFERRY_ENVNAME=no-such-env-for-scferry")
    txt <- paste(out, collapse = "\n")
    skip_if(nzchar(Sys.getenv("RETICULATE_PYTHON")), "RETICULATE_PYTHON is set")
    expect_match(txt, "ERR=No Python interpreter for scferry", fixed = TRUE)
    expect_match(txt, "no-such-env-for-scferry", fixed = TRUE)
    expect_match(txt, "scferry::ferry_setup()", fixed = TRUE)
})

test_that("Python started without scferry gives a restart-R error naming the interpreter", {
    skip_if_no_python()
    py <- attr(ferry_python_ok(), "python")
    out <- run_fresh_r(c(
        sprintf("reticulate::use_python('%s', required = TRUE)", py),
        "reticulate::py_run_string(\"import sys; sys.modules['scferry'] = None\")",
        "ok <- scferry::ferry_python_ok()",
        "cat('OK=', isTRUE(ok), '\\n', sep = '')",
        "r <- tryCatch(scferry:::.ferry_require_python(), error = conditionMessage)",
        "cat('ERR=', r, '\\n', sep = '')"))
    txt <- paste(out, collapse = "\n")
    expect_match(txt, "OK=FALSE")
    expect_match(txt, "already running in this R session", fixed = TRUE)
    expect_match(txt, "Restart R", fixed = TRUE)
    expect_match(txt, basename(py), fixed = TRUE)
})

test_that("ferry_setup() finds the repository and plans the install", {
    repo <- scferry:::.ferry_repo_path()
    skip_if(is.null(repo), "scferry repository checkout not recorded (set SCFERRY_REPO)")
    steps <- ferry_setup(envname = file.path(tempdir(), "venv-test"), dry_run = TRUE, extras = "r")
    expect_equal(steps$repo, repo)
    expect_true(steps$create)
    expect_match(steps$install, "-m pip install", fixed = TRUE)
    expect_match(steps$install, "[r]", fixed = TRUE)
    expect_error(ferry_setup(path = tempdir(), dry_run = TRUE), "not the scferry repository")
})

test_that("Python errors surface as readable R errors", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- pbmc_pair()
    err <- tryCatch(ferry_integrate(objs, max_iter = 200, not_a_param = 3, progress = FALSE),
                    error = identity)
    expect_s3_class(err, "error")
    msg <- conditionMessage(err)
    expect_match(msg, "TypeError: unknown parameter", fixed = TRUE)
    expect_match(msg, "not_a_param", fixed = TRUE)
    expect_false(grepl("Traceback|Detailed traceback", msg))
    expect_error(ferry_integrate(objs, method = "nope"), "unknown method 'nope'; available methods: .*'uniport'")
})
