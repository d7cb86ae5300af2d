"""Stage 2: superpixels, their codes, the flat merge and the merge hierarchy (features, learned scorer), the one `segment` pipeline, its output files and the formats other tools read."""
