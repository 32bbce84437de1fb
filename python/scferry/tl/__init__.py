"""Tools on a fitted model or a joint embedding: label transfer, spot deconvolution, projection of
new cells, imputation of another dataset's features; kNN smoothing, mini-bulks and peak-gene links.

Every function validates its input before any work and writes only the keys it documents."""
from ._common import IMPUTE_KEY, LABEL_KEY, PROBS_KEY, PROPORTIONS_KEY, SCORE_KEY
from .deconvolve import DECONVOLVE_READOUTS, deconvolve, per_type_mean
from .peak_gene import TSS_GENOMES, gene_activity, peak_gene_links, promoter_fractions, tss_table
from .project import impute, project
from .smooth import BULK_KEY, SMOOTH_KEY, knn_smooth, mini_bulk
from .transfer import transfer_labels

__all__ = ["transfer_labels", "deconvolve", "per_type_mean", "project", "impute", "knn_smooth",
           "mini_bulk", "peak_gene_links", "gene_activity", "tss_table", "promoter_fractions",
           "TSS_GENOMES", "LABEL_KEY", "SCORE_KEY", "PROBS_KEY", "PROPORTIONS_KEY",
           "IMPUTE_KEY", "SMOOTH_KEY", "BULK_KEY", "DECONVOLVE_READOUTS"]
