test_that("ferry_python_ok() answers without starting Python", {
    r <- fresh_python_ok()
    expect_identical(r$init, "FALSE", info = r$out)
    expect_true(r$ok || nzchar(r$reason), info = r$out)
})

test_that("ferry_python_ok() is FALSE with a reason for a missing interpreter", {
    r <- fresh_python_ok("RETICULATE_PYTHON=/nonexistent/bin/python")
    expect_false(r$ok)
    expect_match(r$reason, "/nonexistent/bin/python (from RETICULATE_PYTHON) does not exist", fixed = TRUE)
    expect_match(r$reason, "scferry::ferry_setup()", fixed = TRUE)
    expect_match(r$reason, "bash inst/setup.sh", fixed = TRUE)
    expect_identical(r$init, "FALSE")
})

test_that("a user function fails with set-up instructions when the environment is missing", {
    out <- run_fresh_r(c(
        "data('pbmc_small', package = 'SeuratObject')",
        "x <- list(a = pbmc_small[, 1:40], b = pbmc_small[, 41:80])",
        "r <- tryCatch(scferry::ferry_integrate(x), error = conditionMessage)",
        "cat('ERR=', r, '\\n', sep = '')",
        "cat('INIT=', reticulate::py_available(initialize = FALSE), '\\n', sep = '')"),
        env = "SCFERRY_VENV=no-such-env-for-scferry")
    txt <- paste(out, collapse = "\n")
    expect_match(txt, "ERR=No Python interpreter for scferry", fixed = TRUE)
    expect_match(txt, "no-such-env-for-scferry/bin/python (from SCFERRY_VENV)", fixed = TRUE)
    expect_match(txt, "scferry::ferry_setup()", fixed = TRUE)
    expect_match(txt, "INIT=FALSE", fixed = TRUE)
})

test_that("with nothing set, the environment of the set-up record is used", {
    skip_if_no_python()
    py <- attr(ferry_python_ok(), "python")
    empty <- tempfile("workon")
    dir.create(empty)
    r <- fresh_python_ok(c(paste0("R_USER_CONFIG_DIR=", record_dir(py)), paste0("WORKON_HOME=", empty)))
    expect_true(r$ok, info = r$out)
    expect_identical(r$python, py)
    expect_match(r$source, "set-up record", fixed = TRUE)
    expect_identical(r$init, "FALSE")
})

test_that("a recorded interpreter that does not run gives the reason and what to run", {
    bad <- fake_python("boom: cannot start", status = 1L)
    empty <- tempfile("workon")
    dir.create(empty)
    r <- fresh_python_ok(c(paste0("R_USER_CONFIG_DIR=", record_dir(bad)), paste0("WORKON_HOME=", empty)))
    expect_false(r$ok)
    expect_match(r$reason, paste0("The Python at ", bad, " (from the set-up record"), fixed = TRUE)
    expect_match(r$reason, "does not run: boom: cannot start", fixed = TRUE)
    expect_match(r$reason, "scferry::ferry_setup()", fixed = TRUE)
})

test_that("interpreter precedence: settings, then the set-up record, then the default virtualenv", {
    workon <- tempfile("workon")
    default_py <- file.path(workon, "r-scferry", "bin", "python")
    rec_py <- fake_python()
    withr::local_envvar(R_USER_CONFIG_DIR = tempfile("rconfig"), WORKON_HOME = workon,
                        RETICULATE_PYTHON = NA, RETICULATE_PYTHON_ENV = NA, SCFERRY_VENV = NA)
    withr::local_options(scferry.python = NULL, scferry.envname = NULL)
    cand <- function() scferry:::.ferry_python_candidate()
    # nothing recorded, nothing set: the default virtualenv (even if missing, so the error names it)
    expect_identical(cand()$python, default_py)
    # the record wins over the default
    Sys.setenv(R_USER_CONFIG_DIR = record_dir(rec_py))
    expect_identical(cand()$python, rec_py)
    expect_match(cand()$source, "set-up record")
    # a stale record does not hide an existing default
    stale <- file.path(tempfile(), "bin", "python")
    Sys.setenv(R_USER_CONFIG_DIR = record_dir(stale))
    expect_identical(cand()$python, stale)  # default missing too: the record is what failed
    dir.create(dirname(default_py), recursive = TRUE)
    file.create(default_py)
    expect_identical(cand()$python, default_py)
    expect_match(cand()$source, "which does not exist", fixed = TRUE)
    # explicit settings win over the record, in reticulate's order first
    Sys.setenv(R_USER_CONFIG_DIR = record_dir(rec_py))
    Sys.setenv(SCFERRY_VENV = "/opt/venvA")
    expect_identical(cand(), list(python = "/opt/venvA/bin/python", source = "SCFERRY_VENV"))
    options(scferry.envname = "envB")
    expect_identical(cand()$python, file.path(workon, "envB", "bin", "python"))
    options(scferry.python = "/opt/py/bin/python3")
    expect_identical(cand()$source, "option scferry.python")
    Sys.setenv(RETICULATE_PYTHON_ENV = "/opt/venvC")
    expect_identical(cand()$python, "/opt/venvC/bin/python")
    Sys.setenv(RETICULATE_PYTHON = "/opt/venvD/bin/python")
    expect_identical(cand(), list(python = "/opt/venvD/bin/python", source = "RETICULATE_PYTHON"))
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
