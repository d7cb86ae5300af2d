"""Gradio web demo of the CNN-aware binary map segmentation: ``binmap-demo``.

:mod:`demo.pipeline` holds the pure steps (prepare an upload, cache its binary map, segment,
render), :mod:`demo.app` the Gradio page and command line, :mod:`demo.browser` drives the page
in headless Chromium (the browser test and ``docs/demo.png``).
"""
