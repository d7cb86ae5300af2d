"""Serving binary maps with TensorFlow Serving: export (:mod:`serving.export`), a gRPC client
(:mod:`serving.client`) and a loopback test/dev server (:mod:`serving.server`).

The CNN runs on the serving host; superpixels and merging run on the client with the same code
as :mod:`binmap_tf.segmentation.pipeline`, so a served segmentation equals a local one.
"""
