"""Write an evaluation's figures: ``<part>.json`` (machine-readable), ``<part>.md`` (a table)
and PNG charts, all into one output folder, atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lowbudget.evaluate.images import load_image
from lowbudget.io import atomic_write_text
from lowbudget.viz import bar_chart, histogram_chart, image_grid, save_png, to_pil, write_html


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part: keys starting with '_' hold chart data only."""
    return {k: public(v) if isinstance(v, dict) else v for k, v in result.items() if not k.startswith("_")}


def write_report(output: str | Path, part: str, result: dict[str, Any]) -> list[Path]:
    output = Path(output)
    written = [atomic_write_text(output / f"{part}.json", json.dumps(public(result), indent=2) + "\n")]
    rows = _ROWS[part](result)
    table = "| figure | value |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    charts = _CHARTS[part](result, output)
    figures = "".join(f"\n![{c.stem}]({c.name})\n" for c in charts)
    markdown = f"# {part}\n\n{table}{figures}"
    written.append(atomic_write_text(output / f"{part}.md", markdown))
    written.append(write_html(markdown, output / f"{part}.html", title=part))  # the same, for a browser
    return written + charts


def _f(x: float) -> str:
    return f"{x:.4g}"


def _diversity_rows(r):
    rows = [("within-prompt MS-SSIM, generated (mean ± std)", f"{_f(r['ms_ssim_mean'])} ± {_f(r['ms_ssim_std'])}"),
            ("groups of 4 / pairs", f"{r['n_groups']} / {r['n_pairs']}"), ("grouped by", r["grouping"]),
            ("image size / scales", f"{r['image_size']} / {r['scales']}")]
    if "reference_ms_ssim_mean" in r:
        rows.insert(1, ("MS-SSIM of random groups of real images", f"{_f(r['reference_ms_ssim_mean'])} ± {_f(r['reference_ms_ssim_std'])}"))
    return rows


def _diversity_charts(r, out):
    labels, values, errors = ["generated"], [r["ms_ssim_mean"]], [r["ms_ssim_std"]]
    if "reference_ms_ssim_mean" in r:
        labels.append("real (reference)")
        values.append(r["reference_ms_ssim_mean"])
        errors.append(r["reference_ms_ssim_std"])
    return [save_png(bar_chart(labels, values, errors, "within-prompt MS-SSIM (lower = more diverse)"), out / "diversity.png")]


def _realism_rows(r):
    return [("FID", _f(r["fid"])), ("KID (mean ± std over subsets)", f"{_f(r['kid'])} ± {_f(r['kid_std'])}"),
            ("images real / generated", f"{r['n_real']} / {r['n_generated']}"), ("feature dimension", r["features"])]


def _realism_charts(r, out):
    return [save_png(bar_chart(["FID", "KID x 1000"], [r["fid"], 1000 * r["kid"]], [0, 1000 * r["kid_std"]],
                               "realism (lower = closer to the real images)"), out / "realism.png")]


def _classifier_rows(r):
    rows = [(f"test AUC, trained on {name} (n = {s['n_train']})", f"{s['auc_mean']:.3f} ± {s['auc_std']:.3f}")
            for name, s in r["settings"].items()]
    return rows + [("validation / test images (real)", f"{r['n_val']} / {r['n_test']}")]


def _classifier_charts(r, out):
    names = list(r["settings"])
    s = r["settings"]
    return [save_png(bar_chart(names, [s[n]["auc_mean"] for n in names], [s[n]["auc_std"] for n in names],
                               "test AUC by training set (mean ± std over seeds)"), out / "classifier.png")]


def _memorisation_rows(r):
    rows = [("flagged near-copies (fraction of generated)", _f(r["flagged_fraction"]))]
    for space, s in r["spaces"].items():
        rows.append((f"{space}: threshold (p{r['percentile']:g} of real-to-real)", _f(s["threshold"])))
        rows.append((f"{space}: median distance generated->training / real->real",
                     f"{_f(s['generated_to_training']['median'])} / {_f(s['real_to_real']['median'])}"))
    return rows


def _memorisation_charts(r, out):
    written = []
    for space, (gen, ref) in r.get("_distributions", {}).items():
        chart = histogram_chart({"generated -> nearest training": gen.tolist(), "real -> nearest other real": ref.tolist()},
                                f"nearest-neighbour distance, {space} space (red: flag threshold)",
                                marker=r["spaces"][space]["threshold"])
        written.append(save_png(chart, out / f"memorisation-{space}.png"))
    pairs = sorted((n for s in r["spaces"].values() for n in s["nearest"] if n["flagged"]), key=lambda n: n["distance"])[:16]
    if pairs:
        rows = [[to_pil(load_image(Path(p[k]), 128).permute(1, 2, 0).numpy()) for k in ("generated", "training")] for p in pairs]
        labels = [f"{Path(p['generated']).name} ~ {Path(p['training']).name} ({p['distance']:.3g})" for p in pairs]
        written.append(save_png(image_grid(rows, labels), out / "memorisation-flagged.png"))
    return written


_ROWS = {"diversity": _diversity_rows, "realism": _realism_rows, "classifier": _classifier_rows,
         "memorisation": _memorisation_rows}
_CHARTS = {"diversity": _diversity_charts, "realism": _realism_charts, "classifier": _classifier_charts,
           "memorisation": _memorisation_charts}
