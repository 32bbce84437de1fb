# Package state: live Python models and the imported Python modules.
# Python is never started when the package loads; .ferry_require_python() starts it on first use.
.ferry <- new.env(parent = emptyenv())
.ferry$models <- list()      # model id -> list(model = <python model>, datasets, cells (per dataset), record)
.ferry$sf <- NULL            # the scferry Python module, once imported
.ferry$bridge <- NULL        # the Python module scferry._rbridge, once imported
.ferry$ok_cache <- list()    # python path -> result of the subprocess check in ferry_python_ok()

# Delay-loaded module: reticulate's own discovery (if something else starts Python first) then
# prefers a virtualenv named "scferry" or "r-scferry" (reticulate 1.28 py_discover_config).
scferry_py <- NULL

.onLoad <- function(libname, pkgname) {
    # If Python already runs (without scferry), reticulate imports at once and fails: ignore that
    # here; .ferry_require_python() reports it with instructions when a function is used.
    scferry_py <<- tryCatch(reticulate::import("scferry", delay_load = TRUE), error = function(e) NULL)
    invisible(NULL)
}
