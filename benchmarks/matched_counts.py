"""At the segment counts of EGS and at fixed counts, is each hierarchy better than EGS and than the others?

``python -m benchmarks.matched_counts --dataset bsds500 --split test --out DIR`` segments every image of
a split with EGS at each scale of ``--egs-scales`` (100, 200, 500, 1000: from ~530 to ~90 segments per
BSDS500 image), which gives ``n_i`` segments on image ``i`` at that scale, and builds each hierarchy's
merge tree once per image (the default learned hierarchy ``binmap-learned`` and the hand-set
``binmap-hier`` by default; ``--candidates`` adds others, as in :mod:`benchmarks.levels`). Each tree is
cut per image

* at exactly ``n_i`` segments for every EGS scale, so the hierarchy and EGS have the same number of
  segments on every image and their covering, ABO (Seg-IoU), PRI and VoI compare the regions alone,
  not a choice of granularity;
* at every count of ``--counts`` (10, 20, 40, 80), where EGS, flat, has no cut: its curve is beside
  them in the figure.

A first level with fewer superpixels than a count gives all of them (``matched_images`` in the JSON says
on how many images the count was reached; the table shows the mean count in brackets then). Writes
``DIR/matched_counts.json`` (settings and every figure), ``DIR/matched_counts.md`` (covering table,
also printed) and ``DIR/matched_counts.png`` (covering against the mean number of segments per image,
every method). Binary maps with HED edges come from the cache ``binmap-evaluate`` fills. Seconds per
image are host seconds of building the tree (superpixels, codes, merge).
"""

from __future__ import annotations

import time

from benchmarks.levels import EGS, Level, hierarchy_parser, parse_hierarchies, run_and_summarize, write_results

EGS_SCALES = (100.0, 200.0, 500.0, 1000.0)  # the EGS counts: ~530 down to ~90 segments on BSDS500
COUNTS = (10, 20, 40, 80)


def table_markdown(results: dict) -> str:
    """Covering of EGS and every hierarchy at every level, the best of each row in bold."""
    settings, hierarchies = results["settings"], results["hierarchies"]
    names = list(hierarchies)
    lines = [
        f"Matched segment counts on {settings['dataset']} {settings['split']} ({settings['n_images']} images): "
        "covering with each image cut at EGS's segment count at a scale, or at a fixed count (mean segments per "
        "image in brackets where a first level has fewer superpixels on some images).",
        "",
        f"| cut per image at | mean segments | EGS | {' | '.join(names)} |",
        f"|---|---|---|{'---|' * len(names)}",
    ]
    for level in settings["levels"]:
        scale = level.removeprefix(EGS) if level.startswith(EGS) else None
        figures = {name: hierarchies[name]["levels"][level] for name in names}
        egs = results["egs"][scale] if scale is not None else None
        if egs is not None:
            figures[EGS] = egs
        best = max(row["covering"] for row in figures.values())
        cells = []
        for name in [EGS, *names]:
            row = figures.get(name)
            short = row is not None and name != EGS and row["matched_images"] < settings["n_images"]
            text = "-" if row is None else f"{row['covering']:.3f}" + (f" ({row['mean_segments']:.0f})" if short else "")
            cells.append(f"**{text}**" if row is not None and row["covering"] == best else text)
        asked = egs["mean_segments"] if egs is not None else float(level)
        label = f"EGS k={scale} count" if scale is not None else f"{level} segments"
        lines.append(f"| {label} | {asked:.1f} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = hierarchy_parser("python -m benchmarks.matched_counts", __doc__.split("\n\n")[0])
    parser.add_argument("--egs-scales", nargs="*", type=float, default=list(EGS_SCALES), metavar="K",
                        help="EGS scales whose per-image segment counts every hierarchy is cut at "
                             "(default: %(default)s)")
    parser.add_argument("--counts", nargs="*", type=int, default=list(COUNTS), metavar="N",
                        help="fixed segments per image to cut at (default: %(default)s)")
    args = parse_hierarchies(parser, argv)
    start = time.perf_counter()
    levels = [Level(egs_scale=scale) for scale in args.egs_scales] + [Level(count=count) for count in args.counts]
    results = run_and_summarize(args, levels, thresholds=())
    write_results(results, args.out, "matched_counts", start, table=table_markdown,
                  title="covering at EGS's counts and at fixed counts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
