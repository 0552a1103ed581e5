"""Studies built on training and evaluation: the estimator comparison and the KL-weight (beta) sweep."""
