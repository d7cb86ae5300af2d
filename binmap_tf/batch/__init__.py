"""Stage 5: large collections on Ray Data (the pipeline in :mod:`binmap_tf.batch.collection`)."""
