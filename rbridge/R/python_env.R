# Finding, checking and starting the Python environment that holds the scferry Python package.

# The set-up record: inst/setup.sh and ferry_setup() write the interpreter they prepared (and the
# repository checkout) into R's per-user config folder, so that later sessions find them unasked.
.ferry_config_file <- function(name) file.path(tools::R_user_dir("scferry", "config"), name)

.ferry_read_config <- function(name) {
    f <- .ferry_config_file(name)
    if (!file.exists(f)) return(NA_character_)
    x <- trimws(readLines(f, warn = FALSE))
    x <- x[nzchar(x)]
    if (length(x)) path.expand(x[1L]) else NA_character_
}

.ferry_write_config <- function(name, value) {
    f <- .ferry_config_file(name)
    dir.create(dirname(f), recursive = TRUE, showWarnings = FALSE)
    writeLines(value, f)
}

.ferry_venv_dir <- function(envname) {
    if (grepl("/", envname, fixed = TRUE)) return(path.expand(envname))
    root <- Sys.getenv("WORKON_HOME", unset = "~/.virtualenvs")
    file.path(path.expand(root), envname)
}

.ferry_venv_python <- function(envname) file.path(.ferry_venv_dir(envname), "bin", "python")

# Which Python the bridge will use, without starting it. Settings the user made win (reticulate's
# own variables first), then the set-up record, then the default virtualenv.
# Returns list(python = path, source = description).
.ferry_python_candidate <- function() {
    rp <- Sys.getenv("RETICULATE_PYTHON", unset = "")
    if (nzchar(rp)) return(list(python = path.expand(rp), source = "RETICULATE_PYTHON"))
    rpe <- Sys.getenv("RETICULATE_PYTHON_ENV", unset = "")
    if (nzchar(rpe)) return(list(python = .ferry_venv_python(rpe), source = "RETICULATE_PYTHON_ENV"))
    op <- getOption("scferry.python")
    if (!is.null(op)) return(list(python = path.expand(op), source = "option scferry.python"))
    env <- getOption("scferry.envname")
    if (!is.null(env)) return(list(python = .ferry_venv_python(env), source = "option scferry.envname"))
    env <- Sys.getenv("SCFERRY_VENV", unset = "")
    if (nzchar(env)) return(list(python = .ferry_venv_python(env), source = "SCFERRY_VENV"))
    default <- list(python = .ferry_venv_python("r-scferry"), source = "the default virtualenv 'r-scferry'")
    rec <- .ferry_read_config("python")
    if (is.na(rec)) return(default)
    rec_src <- paste0("the set-up record ", .ferry_config_file("python"))
    if (file.exists(rec) || !file.exists(default$python)) return(list(python = rec, source = rec_src))
    # a stale record (its environment was deleted) must not hide a working default
    default$source <- paste0(default$source, "; ", rec_src, " names ", rec, ", which does not exist")
    default
}

.ferry_setup_hint <- function() {
    paste0("Run scferry::ferry_setup() in a fresh R session (it creates the virtualenv 'r-scferry' and ",
           "installs the scferry Python package), or from a shell in the scferry repository: ",
           "bash inst/setup.sh --no-demo")
}

# What to do when the chosen interpreter is unusable. reticulate's own variables win over every
# scferry setting, including the environment ferry_setup() records: advise to unset them first.
.ferry_fix_hint <- function(source) {
    if (source %in% c("RETICULATE_PYTHON", "RETICULATE_PYTHON_ENV")) {
        return(paste0("The environment variable ", source, " takes precedence over every scferry setting, ",
                      "so ferry_setup() cannot help while it is set: unset it (Sys.unsetenv(\"", source,
                      "\") in a fresh R session before any scferry call, or remove it from ~/.Renviron or ",
                      "the shell profile), or point it at a Python that has the scferry package. Then, ",
                      "if scferry's own environment is missing too: ", .ferry_setup_hint()))
    }
    .ferry_setup_hint()
}

.ferry_not_ok <- function(reason, python = NA_character_) {
    structure(FALSE, reason = reason, python = python)
}

#' Is the Python side of scferry usable?
#'
#' Checks, without starting Python in this R session, that the Python interpreter the bridge will
#' use exists and has the \code{scferry} Python package (with NumPy < 2, which reticulate 1.28 needs).
#' The interpreter is the first of: \env{RETICULATE_PYTHON}; \env{RETICULATE_PYTHON_ENV}; the option
#' \code{scferry.python} (an interpreter); the option \code{scferry.envname} or the environment
#' variable \env{SCFERRY_VENV} (a virtualenv name under \env{WORKON_HOME} or \file{~/.virtualenvs},
#' or a path); the environment recorded by the last set-up (\file{inst/setup.sh} of the repository or
#' \code{\link{ferry_setup}}, in the file \code{python} of \code{tools::R_user_dir("scferry",
#' "config")}); the virtualenv \file{~/.virtualenvs/r-scferry}. So after the set-up nothing needs
#' to be set. The check runs that interpreter in a subprocess (\code{importlib.util.find_spec}, no
#' heavy imports) and caches the answer for the session. If Python is already running in this R
#' session, the answer is about that interpreter.
#'
#' @param recheck Ignore the cached answer.
#' @return \code{TRUE} or \code{FALSE}, with attributes \code{reason} (a sentence saying what is wrong
#'   and what to run; empty when \code{TRUE}), \code{python} (the interpreter path) and \code{source}
#'   (which setting chose it).
#' @examples
#' ok <- ferry_python_ok()
#' if (!ok) message(attr(ok, "reason"))
#' @export
ferry_python_ok <- function(recheck = FALSE) {
    if (reticulate::py_available(initialize = FALSE)) {
        cfg <- reticulate::py_config()
        if (!is.null(.ferry$sf) || reticulate::py_module_available("scferry")) {
            return(structure(TRUE, reason = "", python = cfg$python, source = "running Python"))
        }
        return(.ferry_not_ok(paste0(
            "Python is already running in this R session (", cfg$python, ") and it has no 'scferry' ",
            "module; Python cannot be switched once started. Restart R and call scferry functions before ",
            "anything else starts Python (or set RETICULATE_PYTHON to an interpreter that has scferry)."),
            cfg$python))
    }
    cand <- .ferry_python_candidate()
    res <- .ferry_check_python(cand$python, cand$source, recheck)
    attr(res, "source") <- cand$source
    res
}

# Run `py` in a subprocess: does it exist, start, and hold scferry with NumPy < 2? Cached per path.
.ferry_check_python <- function(py, source, recheck = FALSE) {
    if (!file.exists(py)) {
        return(.ferry_not_ok(paste0("No Python interpreter for scferry: ", py, " (from ", source,
                                    ") does not exist. ", .ferry_fix_hint(source)), py))
    }
    if (!recheck && !is.null(.ferry$ok_cache[[py]])) return(.ferry$ok_cache[[py]])
    code <- paste(
        "import sys, importlib.util as u, importlib.metadata as m",
        "miss = [n for n in ('scferry', 'numpy', 'scipy', 'pandas', 'anndata') if u.find_spec(n) is None]",
        "print('MISSING ' + ' '.join(miss)) if miss else None",
        "sys.exit(3) if miss else None",
        "v = m.version('numpy')",
        "print('NUMPY ' + v) if int(v.split('.')[0]) >= 2 else None",
        "sys.exit(4) if int(v.split('.')[0]) >= 2 else None",
        "print('OK ' + sys.version.split()[0])",
        sep = "\n")
    out <- .ferry_with_py_env(suppressWarnings(tryCatch(
        system2(py, c("-c", shQuote(code)), stdout = TRUE, stderr = TRUE),
        error = function(e) structure(conditionMessage(e), status = 127L))))
    status <- attr(out, "status") %||% 0L
    res <- if (status == 0L) {
        structure(TRUE, reason = "", python = py)
    } else if (status == 3L) {
        .ferry_not_ok(paste0("The Python at ", py, " (from ", source, ") lacks module(s): ",
                             sub("^MISSING ", "", out[length(out)]), ". ", .ferry_fix_hint(source)), py)
    } else if (status == 4L) {
        .ferry_not_ok(paste0("The Python at ", py, " has NumPy ", sub("^NUMPY ", "", out[length(out)]),
                             ", but reticulate ", utils::packageVersion("reticulate"),
                             " needs NumPy < 2. Run scferry::ferry_setup(force = TRUE) or ",
                             py, " -m pip install 'numpy<2'."), py)
    } else {
        .ferry_not_ok(paste0("The Python at ", py, " (from ", source, ") does not run: ",
                             paste(utils::tail(out, 3), collapse = " "), ". ", .ferry_fix_hint(source)), py)
    }
    .ferry$ok_cache[[py]] <- res
    res
}

# Start Python (if needed) and import scferry; every user-facing function calls this first.
.ferry_require_python <- function() {
    if (!is.null(.ferry$sf)) return(invisible(.ferry$sf))
    ok <- ferry_python_ok()
    if (!isTRUE(ok)) .ferry_stop(attr(ok, "reason"))
    if (!reticulate::py_available(initialize = FALSE)) {
        if (!nzchar(Sys.getenv("RETICULATE_PYTHON"))) {
            reticulate::use_python(attr(ok, "python"), required = TRUE)
        }
    }
    .ferry_muffle_init(.ferry_import_torch_deepbind())
    sf <- .ferry_muffle_init(tryCatch(reticulate::import("scferry", convert = FALSE), error = function(e) {
        .ferry_stop("Python started (", attr(ok, "python"), ") but 'import scferry' failed: ",
                    .ferry_py_message(e), ". ", .ferry_setup_hint())
    }))
    .ferry$bridge <- .ferry_muffle_init(tryCatch(reticulate::import("scferry._rbridge", convert = TRUE), error = function(e) {
        .ferry_stop("the scferry Python package at ", attr(ok, "python"), " has no module scferry._rbridge ",
                    "(the Python side of this R package; scferry ", .ferry_py_version(sf), " is older than ",
                    "this R package): ", .ferry_py_message(e), ". ", .ferry_setup_hint())
    }))
    .ferry$bridge_raw <- reticulate::import("scferry._rbridge", convert = FALSE)
    .ferry_set_threads()
    .ferry$sf <- sf
    invisible(sf)
}

# The scferry module, after checking that it has function `fun` (an older Python package may not).
.ferry_require_fun <- function(fun) {
    sf <- .ferry_require_python()
    if (!reticulate::py_has_attr(sf, fun)) {
        .ferry_stop("scferry.", fun, "() is not in the scferry Python package of this environment (version ",
                    .ferry_py_version(), "); update it with scferry::ferry_setup() in a fresh R session")
    }
    sf
}

# reticulate 1.28 warns about Poetry whenever the working directory has a pyproject.toml with a
# [tool] table (the scferry repository itself has one); that warning is noise for users.
.ferry_muffle_init <- function(expr) {
    withCallingHandlers(expr, warning = function(w) {
        if (grepl("Poetry|pyproject.toml", conditionMessage(w))) invokeRestart("muffleWarning")
    })
}

# The Python exception's own message (type: text), without reticulate's traceback.
.ferry_py_message <- function(e) {
    err <- tryCatch(reticulate::py_last_error(), error = function(e2) NULL)
    msg <- conditionMessage(e)
    if (!is.null(err) && !is.null(err$value) && nzchar(err$value) &&
        grepl(err$value, msg, fixed = TRUE)) {
        return(paste0(err$type, ": ", err$value))
    }
    msg <- sub("\n*Detailed traceback:.*$", "", msg)
    trimws(msg)
}

# Evaluate a call into Python; a Python exception becomes an R error whose message is the
# exception's own message, prefixed with what was being done.
.ferry_py <- function(expr, what) {
    tryCatch(expr, error = function(e) {
        if (inherits(e, "ferry_error")) stop(e)
        .ferry_stop(what, " failed in Python: ", .ferry_py_message(e))
    })
}

# Call the scferry Python function `fun` (a Python object, e.g. sf$integrate) with `args` (an R list:
# unnamed elements positional, named ones keyword arguments) through scferry._rbridge.call, which
# records the Python warnings: each is re-signalled here as an R warning of class "ferry_warning"
# (seen by suppressWarnings, withCallingHandlers and knitr). A Python exception becomes an R error as
# in .ferry_py. `x_name`: what the R user called the matrix sent as AnnData .X (e.g. "layer 'counts'
# of assay 'RNA'"), substituted where a Python message speaks of ".X". Returns the Python result
# (not converted).
.ferry_call <- function(fun, args, what, x_name = NULL) {
    nm <- names(args) %||% rep("", length(args))
    pos <- unname(args[!nzchar(nm)])
    kw <- args[nzchar(nm)]
    res <- tryCatch(
        .ferry$bridge_raw$call(fun, reticulate::tuple(pos, convert = FALSE),
                               reticulate::py_dict(names(kw), unname(kw), convert = FALSE)),
        error = function(e) {
            if (inherits(e, "ferry_error")) stop(e)
            .ferry_stop(what, " failed in Python: ", .ferry_r_terms(.ferry_py_message(e), x_name))
        })
    ws <- reticulate::py_to_r(reticulate::py_get_item(res, "warnings"))
    for (w in ws) {
        msg <- paste0("scferry (Python ", w$category, "): ", .ferry_r_terms(w$message, x_name))
        warning(structure(class = c("ferry_warning", "warning", "condition"),
                          list(message = msg, call = NULL, category = w$category)))
    }
    reticulate::py_get_item(res, "value")
}

# Python messages speak of AnnData (".X", "layer=") and Python values ("pca_prior=False"); say
# what the R user sets instead ("pca_prior = FALSE").
.ferry_r_terms <- function(msg, x_name) {
    msg <- gsub("\\b([A-Za-z_][A-Za-z0-9_.]*)=(True|False|None)\\b", "\\1 = \\2", msg, perl = TRUE)
    msg <- gsub("= True\\b", "= TRUE", msg, perl = TRUE)
    msg <- gsub("= False\\b", "= FALSE", msg, perl = TRUE)
    msg <- gsub("= None\\b", "= NULL", msg, perl = TRUE)
    msg <- gsub('\\b([A-Za-z_][A-Za-z0-9_.]*)="([^"]*)"', '\\1 = "\\2"', msg, perl = TRUE)
    if (is.null(x_name)) return(msg)
    msg <- gsub("(adata)?\\.X \\(or layer=\\.\\.\\.\\)", x_name, msg)
    msg <- gsub("(adata)?\\.X \\(or `?layer`?\\)", x_name, msg)
    msg <- gsub("Filter them first: sc.pp.filter_cells(adata, min_counts=1)",
                paste0("Remove those cells first (Seurat: subset(obj, subset = nCount_<assay> > 0); ",
                       "SingleCellExperiment: sce[, colSums(counts(sce)) > 0])"), msg, fixed = TRUE)
    gsub("(adata)?\\.X\\b", x_name, msg)
}

# Path of the scferry repository checkout (holds pyproject.toml), or NULL.
.ferry_repo_path <- function(path = NULL) {
    cands <- c(path, getOption("scferry.repo"), Sys.getenv("SCFERRY_REPO", unset = ""),
               .ferry_read_config("repo_path"))
    inst <- system.file("scferry_repo_path", package = "scferry")
    if (nzchar(inst)) cands <- c(cands, readLines(inst, warn = FALSE)[1L])
    for (p in cands[nzchar(cands) & !is.na(cands)]) {
        p <- path.expand(p)
        toml <- file.path(p, "pyproject.toml")
        if (file.exists(toml) && any(grepl('^name *= *"scferry"', readLines(toml, warn = FALSE)))) {
            return(normalizePath(p))
        }
        if (!is.null(path) && identical(p, path.expand(path))) {
            .ferry_stop("path = '", path, "' is not the scferry repository (no pyproject.toml naming ",
                        "the package 'scferry' there)")
        }
    }
    NULL
}

#' Create or update the Python environment scferry uses
#'
#' Creates the virtualenv \code{envname} (with \code{reticulate::virtualenv_create}) and installs the
#' scferry Python package into it from the scferry repository checkout, with the dependency pins
#' of that checkout's \file{pyproject.toml} (NumPy < 2 among them, which reticulate 1.28 needs).
#' The checkout is found from \code{path}, the option \code{scferry.repo}, the environment variable
#' \env{SCFERRY_REPO}, the checkout recorded by the last set-up, or the checkout this R package was
#' installed from (recorded at installation). Needs network access to PyPI (or a pip configuration
#' pointing at a mirror).
#'
#' On success the environment is recorded (file \code{python} in \code{tools::R_user_dir("scferry",
#' "config")}, as \file{inst/setup.sh} does), so later R sessions use it without any setting; see
#' \code{\link{ferry_python_ok}} for the settings that take precedence.
#'
#' Python cannot be switched once it runs in an R session, so call this in a fresh session, and
#' restart R afterwards if Python was started.
#'
#' @param envname Name of the virtualenv (under \env{WORKON_HOME} or \file{~/.virtualenvs}) or a path;
#'   default \env{SCFERRY_VENV} if set, else \code{"r-scferry"} (as \file{inst/setup.sh}).
#' @param python Python interpreter to create the virtualenv from (Python >= 3.10); \code{NULL}
#'   lets reticulate choose.
#' @param path The scferry repository checkout; \code{NULL} to find it as described.
#' @param force Delete and recreate the virtualenv if it exists.
#' @param editable Install the Python package in editable mode (\code{pip install -e}), for development.
#' @param extras Optional dependency groups of the Python package, e.g. \code{"r"} (rpy2, anndata2ri).
#' @param dry_run Only return the steps that would be run.
#' @return Invisibly, the path of the environment's Python (with \code{dry_run}, a list of the steps).
#' @examples
#' # what ferry_setup() would do here (dry_run: nothing is installed)
#' steps <- tryCatch(ferry_setup(dry_run = TRUE), ferry_error = conditionMessage)
#' str(steps)
#' @export
ferry_setup <- function(envname = NULL, python = NULL, path = NULL, force = FALSE,
                        editable = FALSE, extras = character(), dry_run = FALSE) {
    repo <- .ferry_repo_path(path)
    if (is.null(repo)) {
        .ferry_stop("cannot find the scferry repository checkout to install the Python package from; ",
                    "pass path = '<checkout>' (the folder holding pyproject.toml) or set SCFERRY_REPO")
    }
    if (is.null(envname)) envname <- Sys.getenv("SCFERRY_VENV", unset = "")
    if (!nzchar(envname)) envname <- "r-scferry"
    envdir <- .ferry_venv_dir(envname)
    py <- file.path(envdir, "bin", "python")
    spec <- if (length(extras)) paste0(repo, "[", paste(extras, collapse = ","), "]") else repo
    pip_args <- c("-m", "pip", "install", if (editable) "-e", shQuote(spec))
    steps <- list(repo = repo, envdir = envdir,
                  remove = force && dir.exists(envdir),
                  create = force || !file.exists(py),
                  install = paste(c(py, pip_args), collapse = " "))
    if (dry_run) return(steps)
    if (reticulate::py_available(initialize = FALSE)) {
        .ferry_stop("Python is already running in this R session (", reticulate::py_config()$python,
                    "); restart R and run scferry::ferry_setup() before anything else uses Python")
    }
    if (steps$remove) reticulate::virtualenv_remove(envdir, confirm = FALSE)
    if (steps$create) {
        .ferry_with_py_env(reticulate::virtualenv_create(envdir, python = python, packages = NULL))
    }
    message("Installing the scferry Python package from ", repo, " into ", envdir, " ...")
    status <- .ferry_with_py_env(system2(py, pip_args))
    if (!identical(as.integer(status), 0L)) {
        .ferry_stop("pip install failed (exit status ", status, "): ", steps$install)
    }
    ok <- .ferry_check_python(py, "ferry_setup()", recheck = TRUE)
    if (!isTRUE(ok)) .ferry_stop("set-up finished but the check still fails: ", attr(ok, "reason"))
    .ferry_write_config("repo_path", repo)
    .ferry_write_config("python", py)
    message("scferry Python environment ready: ", py)
    cand <- .ferry_python_candidate()
    if (!identical(normalizePath(cand$python, mustWork = FALSE), normalizePath(py))) {
        message("Note: ", cand$source, " selects ", cand$python, " instead; unset it to use this environment")
    }
    invisible(py)
}

# R links its own BLAS (on Debian often the slow reference BLAS) into the process with global
# symbols; torch loaded afterwards into the same process then resolves sgemm_ & co. to R's BLAS
# instead of its bundled MKL: matrix products measured 35x slower under R than in Python. Loading
# torch with RTLD_DEEPBIND makes its libraries prefer their own symbols. Linux only; switch off with
# options(scferry.deepbind = FALSE).
.ferry_import_torch_deepbind <- function() {
    if (!isTRUE(getOption("scferry.deepbind", TRUE)) || Sys.info()[["sysname"]] != "Linux") return(invisible())
    code <- paste(
        "import sys, os, importlib.util",
        "if 'torch' not in sys.modules and importlib.util.find_spec('torch') is not None and hasattr(os, 'RTLD_DEEPBIND'):",
        "    _flags = sys.getdlopenflags()",
        "    sys.setdlopenflags(_flags | os.RTLD_DEEPBIND)",
        "    try:",
        "        import torch",
        "    finally:",
        "        sys.setdlopenflags(_flags)",
        sep = "\n")
    tryCatch(reticulate::py_run_string(code, local = TRUE, convert = FALSE), error = function(e) NULL)
    invisible()
}

# options(scferry.threads = n) or SCFERRY_THREADS=n: torch CPU threads for this session. Unset: torch's
# default (all cores). On machines whose cores are shared with other jobs, OpenMP spin-waiting made
# training 10-30x slower with 2 threads than with 1 (measured on a busy 2-core VM).
.ferry_set_threads <- function() {
    n <- getOption("scferry.threads", Sys.getenv("SCFERRY_THREADS", unset = ""))
    if (is.null(n) || identical(n, "")) return(invisible())
    n <- suppressWarnings(as.integer(n))
    if (is.na(n) || n < 1L) .ferry_stop("option scferry.threads / SCFERRY_THREADS must be a positive integer")
    torch <- tryCatch(reticulate::import("torch", convert = FALSE), error = function(e) NULL)
    if (!is.null(torch)) torch$set_num_threads(n)
    invisible()
}

# Run expr with the library path R's start-up script prepended removed from LD_LIBRARY_PATH, for
# Python subprocesses: with R's /usr/lib/<arch> first, a Python built with a shared libpython
# (pyenv, custom builds) loads the system libpython of another patch release and its extension
# modules fail ("undefined symbol: _PyModule_Add" in _ssl, so pip cannot reach HTTPS indexes).
# Only children see the change (the dynamic loader of this process read the variable at start-up).
.ferry_with_py_env <- function(expr) {
    old <- Sys.getenv("LD_LIBRARY_PATH", unset = NA)
    if (is.na(old) || !nzchar(old)) return(expr)
    parts <- strsplit(old, ":", fixed = TRUE)[[1L]]
    r_added <- c(R.home("lib"), "/usr/lib/R/lib", "/usr/lib64/R/lib",
                 grep("^/(usr/)?lib(64)?(/[[:alnum:]_]+-linux-gnu)?/?$", parts, value = TRUE),
                 grep("/jvm/.*/lib/server/?$|/java.*/lib/server/?$", parts, value = TRUE))
    keep <- parts[nzchar(parts) & !parts %in% r_added]
    Sys.setenv(LD_LIBRARY_PATH = paste(keep, collapse = ":"))
    on.exit(Sys.setenv(LD_LIBRARY_PATH = old), add = TRUE)
    expr
}
