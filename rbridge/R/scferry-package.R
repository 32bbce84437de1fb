#' scferry: Seurat and SingleCellExperiment bridge to the scferry Python package
#'
#' \code{\link{ferry_integrate}} integrates datasets and adds a \code{"ferry"} reduction;
#' \code{\link{ferry_transfer}} transfers labels in Seurat's \code{TransferData} shapes;
#' \code{\link{ferry_deconvolve}} estimates spot compositions; \code{\link{ferry_read_h5ad}} reads
#' .h5ad files; \code{\link{ferry_setup}} and \code{\link{ferry_python_ok}} manage the Python side.
#'
#' The Python interpreter is chosen once per R session, on the first call that needs it: see
#' \code{\link{ferry_python_ok}}. Options: \code{scferry.envname} (virtualenv name or path; or the
#' environment variable \env{SCFERRY_VENV}), \code{scferry.python} (an interpreter path),
#' \code{scferry.repo} (the repository checkout for \code{ferry_setup}), \code{scferry.threads}.
#'
#' @keywords internal
#' @importClassesFrom Matrix dgCMatrix
"_PACKAGE"
