library(testthat)
library(scferry)

test_check("scferry")
