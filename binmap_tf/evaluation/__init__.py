"""Stage 3: benchmark data sets, region metrics, the evaluated methods, reports and the binary-map cache."""
