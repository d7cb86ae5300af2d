"""Gradio web demo: upload a photo, see its CNN-aware binary map, superpixels and merged segments.

Command line (:mod:`binmap_tf.cli.demo`)::

    binmap-demo [--serving HOST:PORT | --hashing PATH|fine-tuned] [--host 127.0.0.1] [--port 7860]
        [--max-pixels N] [--retry-attempts N] [--retry-base-delay S] [--retry-max-delay S]

Without ``--serving`` the CNN runs in this process (one mapper per code length: the 8-bit one is
built at start-up, the 24-bit one on first use; with ``--hashing``, one mapper with that hashing
layer, e.g. the fine-tuned one); with ``--serving``, binary maps come from a TF Serving /
``serving.server`` endpoint and only superpixels and merging run here. Each session keeps its
image's binary maps in ``gr.State``, so moving a superpixel or merge control re-merges without
running the CNN again, and moving the number of segments re-cuts the stored merge tree (no CNN, no
re-merge). Clicking the segments image highlights the segment under the pointer and shows its row of
the region table; the downloads are the command line's files (labels PNG, UCM, region table, COCO).
The steps themselves are in :mod:`demo.pipeline`; this module is the page and its wiring.
"""

from __future__ import annotations

import html
import logging
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from binmap_tf.common.images import ImageError, read_image
from binmap_tf.segmentation.superpixels import EGS_SCALE, SLIC_N_SEGMENTS
from demo.pipeline import (
    AUTOMATIC_CUT,
    DEMO_MAX_PIXELS,
    MERGE_ORDERS,
    DemoError,
    LocalMappers,
    MapCache,
    MapSource,
    ServedMaps,
    Settings,
    UploadNames,
    check_upload,
    example_images,
    hashing_mappers,
    render,
    segment_upload,
    select_segment,
    shown,
    write_downloads,
)

log = logging.getLogger(__name__)

CONCURRENCY = 2  # requests computed at a time: each holds a full-size upload and the CNN's activations
QUEUE_SIZE = 16  # further requests wait in the queue; beyond this they are refused
SESSION_CAPACITY = 200  # sessions whose state (image + maps, a few MB each) is kept
STATE_TTL_S = 1800  # a session's cached maps are dropped after 30 idle minutes
MAX_UPLOAD_SIZE = "50mb"
# System fonts: the default theme loads Inter from Google Fonts, which offline hosts cannot reach.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
# Errors whose message is meant for the user (ImageError is a ValueError; FileNotFoundError
# names a missing weights package).
USER_ERRORS = (ValueError, DemoError, FileNotFoundError)

INTRO = """# CNN-aware binary map segmentation
Ravanbakhsh et al., *CNN-aware binary map for general semantic segmentation*, ICIP 2016: a CNN
turns the image into a grid of k-bit codes (the **binary map**), and low-level **superpixels**
(EGS or SLIC) that get the same code are merged into **segments**. Upload a photo and press
*Segment*; changing a superpixel or merge control re-merges without running the CNN again.
The default, the *hierarchy*, starts from a watershed of the network's edges and merges in the order
of a scorer learned on BSDS500 (codes, edges, colour, texture), cut where it scored best on BSDS500
val or at any number of segments; *adjacent* merging of EGS superpixels is the paper's method."""


def _error(message: str) -> gr.Error:
    """A ``gr.Error`` showing ``message`` as text (Gradio renders it as HTML; file names may hold tags),
    logged as one line instead of a traceback: it is the user's problem or the model server's."""
    log.warning("%s", message)
    return gr.Error(html.escape(message), print_exception=False)


def upload_image(names: UploadNames | None = None, **kwargs: Any) -> gr.Image:
    """A ``gr.Image(type="numpy")`` that checks an upload before decoding it, so a non-image, corrupt
    or oversized file gives a readable message instead of a failed request; the file's name goes to
    ``names`` (the downloads are named after it).

    The check wraps this instance's ``preprocess``: a ``gr.Image`` subclass would do the same, but
    Gradio writes a ``.pyi`` stub beside the module of every component class it sees.
    """
    image = gr.Image(type="numpy", **kwargs)
    decode = image.preprocess

    def preprocess(payload: Any) -> np.ndarray | None:
        if payload is not None and payload.path is not None:
            # The package's own decoder, as the command line reads files: Gradio's would read a
            # 16-bit PNG as all white and a GIF as its palette indices.
            try:
                check_upload(payload.path)
                pixels, notices = read_image(payload.path)
            except ImageError as error:
                raise _error(str(error)) from None
            for notice in notices:
                gr.Warning(notice)
            if names is not None:
                names.add(pixels, payload.orig_name)
            return pixels
        try:
            return decode(payload)
        except (OSError, ValueError, SyntaxError) as error:  # e.g. a truncated file
            raise _error(f"the upload could not be decoded ({error}); upload the file again or as PNG/JPEG") from None

    image.preprocess = preprocess
    return image


class Segmenter:
    """The page's segmentation event: control values -> :func:`segment_upload` -> what the page shows;
    and the click on a segment (:meth:`select`).

    Writes each result's downloads (:func:`write_downloads`, named after the upload as ``names``
    recorded it) to a temporary folder it owns (removed with it); turns :data:`USER_ERRORS` into a
    message on the page.
    """

    OUTPUTS = 8  # binary map, superpixels, segments, table, downloads, summary, selected segment, cache

    def __init__(self, source: MapSource, max_pixels: int = DEMO_MAX_PIXELS, names: UploadNames | None = None
                 ) -> None:
        self.source = source
        self.max_pixels = max_pixels
        self.names = UploadNames() if names is None else names
        self._folder = tempfile.TemporaryDirectory(prefix="binmap_demo_")
        self.folder = Path(self._folder.name)

    def run(self, upload: np.ndarray | None, method: str, scale: float, n_segments: float, hamming: float,
            merge: str, segments: float, scorer: str, bits: int | None, cache: MapCache | None) -> tuple:
        """Segment ``upload`` with the controls' settings; reuse the binary map in ``cache`` when it fits."""
        if upload is None:
            raise _error("Upload an image (or click an example) first.")
        settings = Settings(superpixels=method, scale=float(scale), n_segments=int(n_segments),
                            hamming=int(hamming), merge=merge, segments=int(segments), scorer=scorer, bits=bits)
        try:
            run = segment_upload(upload, settings, self.source, cache, self.max_pixels)
            views = render(run, self.max_pixels)
            downloads = write_downloads(run, self.folder, self.names.get(run.cache.digest))
        except USER_ERRORS as error:
            raise _error(str(error)) from None
        for notice in run.notices:
            gr.Warning(html.escape(notice))
        run.cache.shown = shown(run, views, downloads)
        return (views.binary_map, views.superpixels, views.segments, views.table, [str(path) for path in downloads],
                views.summary, _row_table(run.cache.shown.header, []), run.cache)

    @staticmethod
    def select(cache: MapCache | None, event: gr.SelectData) -> tuple:
        """A click on the segments image at ``event.index`` (column, row): that segment highlighted, and
        its row of the region table."""
        if cache is None or cache.shown is None:
            return gr.skip(), gr.skip()
        x, y = (int(value) for value in event.index)
        image, header, row = select_segment(cache.shown, x, y)
        return image, _row_table(header, [row])

    def rerun(self, upload: np.ndarray | None, *controls: Any) -> tuple:
        """:meth:`run` after a control changed; nothing happens while no image is loaded."""
        if upload is None:
            return tuple(gr.skip() for _ in range(self.OUTPUTS))
        return self.run(upload, *controls)


def _row_table(header: list[str], rows: list[list[str]]) -> dict[str, Any]:
    """The selected-segment table's value: the region table's ``header`` and ``rows``."""
    return {"headers": header, "data": rows}


def _superpixel_controls(method: str) -> tuple[dict, dict]:
    """Show only the chosen superpixel method's parameter."""
    return gr.update(visible=method == "egs"), gr.update(visible=method == "slic")


def _merge_controls(merge: str) -> tuple[dict, dict, dict]:
    """Show the Hamming threshold for a flat merge, the number of segments and merge order for the hierarchy."""
    hierarchy = merge == "hierarchy"
    return gr.update(visible=not hierarchy), gr.update(visible=hierarchy), gr.update(visible=hierarchy)


def build_app(source: MapSource, max_pixels: int = DEMO_MAX_PIXELS, examples: list[str] | None = None) -> gr.Blocks:
    """The demo page for binary maps from ``source``; ``examples`` (image files) default to
    :func:`~demo.pipeline.example_images`."""
    names = UploadNames()
    segmenter = Segmenter(source, max_pixels, names)
    with gr.Blocks(title="binmap_tf: CNN-aware binary map segmentation", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO)
        cache = gr.State(MapCache(), time_to_live=STATE_TTL_S)
        with gr.Row():
            with gr.Column(scale=1):
                image = upload_image(names, label="Image", sources=["upload", "webcam", "clipboard"],
                                     elem_id="input-image")
                # The defaults are the package's (Settings()) where the maps carry edges; a model server
                # without them gets the paper's EGS + adjacent merge.
                default = Settings() if source.has_edges else Settings(superpixels="egs", merge="adjacent")
                methods = [("EGS (Felzenszwalb)", "egs"), ("SLIC", "slic")]
                merges = [("adjacent superpixels (the paper)", "adjacent"), ("any superpixels (global)", "global")]
                if source.has_edges:  # the watershed and the hierarchy need the network's edge map
                    methods.insert(0, ("watershed of the network's edges", "watershed"))
                    merges.insert(0, ("hierarchy (learned or hand-set order)", "hierarchy"))
                method = gr.Radio(methods, value=default.superpixels, label="Superpixels")
                hierarchy = default.merge == "hierarchy"
                scale = gr.Slider(10, 1000, value=EGS_SCALE, step=10, visible=default.superpixels == "egs",
                                  label="EGS scale k (larger: bigger superpixels)")
                n_segments = gr.Slider(50, 2000, value=SLIC_N_SEGMENTS, step=50, visible=False,
                                       label="SLIC number of superpixels")
                hamming = gr.Slider(0, 8, value=0, step=1, visible=not hierarchy,
                                    label="Hamming threshold (0: merge equal codes only, as in the paper)")
                merge = gr.Radio(merges, value=default.merge, label="Merge")
                scorer = gr.Radio(list(MERGE_ORDERS), value=default.scorer, visible=hierarchy, label="Merge order",
                                  elem_id="scorer")
                segments_count = gr.Slider(AUTOMATIC_CUT, 200, value=AUTOMATIC_CUT, step=1, visible=hierarchy,
                                           label="Number of segments: a cut of the stored merge tree (0: the cut "
                                                 "chosen on BSDS500 val)", elem_id="segments-count")
                if source.bits_choices:
                    bits = gr.Radio([(f"{k} bits ({'grey' if k <= 8 else 'RGB'})", k) for k in source.bits_choices],
                                    value=source.bits_choices[0], label="Binary map code length")
                else:  # the served model fixes the code length
                    bits = gr.State(None)
                run = gr.Button("Segment", variant="primary", elem_id="run")
                examples = example_images() if examples is None else examples
                if examples:
                    gr.Examples(examples, inputs=[image], examples_per_page=6)
            with gr.Column(scale=2):
                summary = gr.Markdown("Upload an image and press *Segment*.", label="Summary", elem_id="summary")
                with gr.Row():
                    binary_map = gr.Image(label="Binary map", format="png", interactive=False, elem_id="binary-map")
                    superpixels = gr.Image(label="Superpixels", format="png", interactive=False,
                                           elem_id="superpixels")
                segments = gr.Image(label="Merged segments (mean colour): click one to select it", format="png",
                                    interactive=False, elem_id="segments")
                segment_row = gr.Dataframe(label="Selected segment (its row of the region table)", interactive=False,
                                           elem_id="segment-row")
                with gr.Row():
                    table = gr.Dataframe(headers=["quantity", "value"], label="Counts and seconds per stage",
                                         interactive=False, elem_id="stats")
                    downloads = gr.File(label="Downloads: labels (16-bit PNG), UCM (16-bit PNG, .mat), region "
                                              "table (CSV), COCO (JSON)", file_count="multiple", interactive=False,
                                        elem_id="downloads")

        inputs = [image, method, scale, n_segments, hamming, merge, segments_count, scorer, bits, cache]
        outputs = [binary_map, superpixels, segments, table, downloads, summary, segment_row, cache]
        run.click(segmenter.run, inputs, outputs, api_name="segment")
        triggers = [method.change, scale.release, n_segments.release, hamming.release, merge.change,
                    segments_count.release, scorer.change]
        if isinstance(bits, gr.Radio):
            triggers.append(bits.change)
        gr.on(triggers, segmenter.rerun, inputs, outputs, api_name="resegment", trigger_mode="always_last",
              api_visibility="undocumented")  # the page's own re-merge; clients call /segment
        segments.select(Segmenter.select, cache, [segments, segment_row], api_name="select_segment",
                        api_visibility="private")
        method.change(_superpixel_controls, method, [scale, n_segments], api_name="superpixel_controls",
                      queue=False, api_visibility="private")
        merge.change(_merge_controls, merge, [hamming, segments_count, scorer], api_name="merge_controls",
                     queue=False, api_visibility="private")
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, **kwargs: Any) -> None:
    """Queue ``app`` (:data:`CONCURRENCY` requests at a time) and serve it; ``kwargs`` go to ``launch``."""
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    app.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_SIZE,
               state_session_capacity=SESSION_CAPACITY, theme=THEME, **kwargs)


def make_source(serving: str | None, hashing: str | None = None, retry: Any = None) -> MapSource:
    """A client of the model server at ``serving`` (``host:port``) retrying as ``retry`` says (a
    :class:`serving.retry.RetryPolicy`, None: its defaults), or local mappers when None (with the
    ``hashing`` layer when given; the first code length's mapper built now, so the first request
    does not wait for it)."""
    if serving is None:
        try:
            source = LocalMappers() if hashing is None else hashing_mappers(hashing)
            source.mapper(source.bits_choices[0])
        except (FileNotFoundError, ValueError) as error:  # e.g. missing weights package or hashing file
            raise SystemExit(f"error: {error}") from None
        return source
    try:
        return ServedMaps(serving, retry=retry)
    except ImportError as error:
        raise SystemExit(f"error: --serving needs the serving extra ({error}); "
                         "install it with: pip install -e '.[serving]'") from None
