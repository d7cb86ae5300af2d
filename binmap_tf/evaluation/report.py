"""Human-readable results: the Table 1 comparison in Markdown and the Fig. 4 sweep plot."""

from __future__ import annotations

from pathlib import Path

from binmap_tf.common.files import atomic_path

# The paper's Table 1 (Segmentation-IoU, %), keyed by our method names.
PAPER_TABLE1 = {
    "msrc": {"egs": 50.3, "slic": 48.7, "binmap-egs": 55.03},
    "bsds500": {"egs": 45.19, "slic": 43.70, "binmap-egs": 48.35},
}


def table_markdown(rows: dict[str, dict], dataset: str, split: str, settings: dict) -> str:
    """Measured figures per method beside the paper's Segmentation-IoU."""
    paper = PAPER_TABLE1.get(dataset, {})
    lines = [
        f"Dataset: {dataset} ({split}), {next(iter(rows.values()))['n_images'] if rows else 0} images; "
        f"backbone {settings.get('backbone')}, {settings.get('bits')} bits, hamming {settings.get('hamming')}, "
        f"merge {settings.get('merge')}.",
        "",
        "| method | setting | Seg-IoU (ABO) % | paper Seg-IoU % | covering | PRI | VoI | segments | superpixels | s/image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        reference = f"{paper[method]:.2f}" if method in paper else "–"
        lines.append(
            f"| {method} | {row['parameter']}={row['value']:g} | {100 * row['seg_iou']:.2f} | {reference} | "
            f"{row['covering']:.3f} | {row['pri']:.3f} | {row['voi']:.3f} | {row['mean_segments']:.1f} | "
            f"{row['mean_superpixels']:.1f} | {row['seconds_per_image']:.3f} |")
    return "\n".join(lines) + "\n"


def sweep_figure(summary: dict, path: Path, dataset: str) -> None:
    """Fig. 4 and its fair counterpart: Seg-IoU against superpixels, quality against output segments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, list[dict]] = {}
    for setting, row in summary.items():
        by_method.setdefault(setting.method, []).append(row)
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    panels = [("mean_superpixels", "seg_iou", "Seg-IoU (ABO) vs superpixels (paper's Fig. 4)"),
              ("mean_segments", "seg_iou", "Seg-IoU (ABO) vs output segments"),
              ("mean_segments", "covering", "Covering vs output segments")]
    for axis, (x_key, y_key, title) in zip(axes, panels):
        for method, rows in by_method.items():
            if x_key == "mean_superpixels" and len(rows) > 1 and len({row[x_key] for row in rows}) == 1:
                continue  # a hierarchy: one set of superpixels cut at many levels has no curve here
            rows = sorted(rows, key=lambda row: row[x_key])
            style = "--s" if method in ("egs", "slic") else "-o"
            axis.plot([row[x_key] for row in rows], [row[y_key] for row in rows], style, label=method, markersize=4)
        axis.set_xscale("log")
        axis.set_xlabel(x_key.replace("mean_", "mean number of ").replace("_", " "))
        axis.set_ylabel(y_key.replace("seg_iou", "Seg-IoU"))
        axis.set_title(title, fontsize=10)
        axis.grid(True, alpha=0.3)
    axes[1].legend(fontsize=8)  # the middle panel has every method
    figure.suptitle(f"{dataset}: quality against the number of superpixels / segments")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
