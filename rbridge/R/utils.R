`%||%` <- function(a, b) if (is.null(a)) b else a

.ferry_stop <- function(...) {
    stop(structure(class = c("ferry_error", "error", "condition"),
                   list(message = paste0(...), call = NULL)))
}

.ferry_warn <- function(...) warning(paste0(...), call. = FALSE)

# "a", "b", "c" (and 12 more)
.ferry_list <- function(x, n = 20L) {
    x <- as.character(x)
    if (length(x) == 0L) return("(none)")
    s <- paste0("'", utils::head(x, n), "'", collapse = ", ")
    if (length(x) > n) s <- paste0(s, sprintf(" (and %d more)", length(x) - n))
    s
}

.ferry_is_seurat <- function(x) inherits(x, "Seurat")

.ferry_is_sce <- function(x) methods::is(x, "SingleCellExperiment")

.ferry_class <- function(x) {
    if (.ferry_is_seurat(x)) return("Seurat")
    if (.ferry_is_sce(x)) return("SingleCellExperiment")
    class(x)[1L]
}

.ferry_need <- function(pkg, why) {
    if (!requireNamespace(pkg, quietly = TRUE)) {
        .ferry_stop("package '", pkg, "' is needed ", why, " but is not installed")
    }
}
