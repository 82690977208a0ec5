"""Self-contained HTML reports: one per run (runs/NAME/report.html) and one per comparison
(WORK/compare/report.html).

A report is one file: its figures are embedded as data URIs and its style is inline, so it opens
in any browser from the file system, sends nothing anywhere and fetches nothing (no script at
all). It is built from the files the run or the comparison wrote (config.json, metrics.json,
eval/metrics.json and the PNG figures beside them; compare.csv, compare_summary.csv and
compare.png), so it can be rebuilt from them at any time and says nothing they do not.

    write_run_report(RunDir("runs/demo"))
    write_comparison_report(Path("data/work/compare"))
"""
import base64
import html
import json
from pathlib import Path

from lidc.io import atomic_path, read_csv

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 520px; }
img { max-width: 520px; } .note { color: #8a5a00; }
"""

NAME_CELL = ' class="name"'
# The figures of a run's eval/ folder, in the order the report shows them, with captions.
RUN_FIGURES = (
    ("learning_curves.png", "Loss (log scale) and accuracy on the training batches and the "
                            "validation set, with the stop threshold and the majority share."),
    ("confusion.png", "Confusion matrix of the test patches (rows: true class)."),
    ("roc.png", "ROC curve of each class against the others."),
    ("calibration.png", "Reliability diagram: how often the network is right against how sure "
                        "it is, with the expected calibration error."),
)


def write_run_report(run_dir):
    """Writes RUN/report.html from the run's files; returns its path."""
    config = _json(run_dir.config)
    training = _json(run_dir.metrics)
    evaluation = _json(run_dir.eval / "metrics.json")
    sections = [("Configuration", _config_table(config, training))]
    if evaluation:
        sections.append(("Test figures", _metrics_section(evaluation)))
        if "lesion" in evaluation:
            sections.append(("Per lesion (the mean of its patches)",
                             _metrics_table(evaluation["lesion"], None)))
        if "tta" in evaluation:
            sections.append(("With test-time augmentation", _metrics_table(evaluation["tta"],
                                                                            None)))
    sections.append(("Figures", "".join(_figure(run_dir.eval / name, caption)
                                        for name, caption in RUN_FIGURES)))
    sections.extend(_explanations(run_dir.eval))
    title = f"Run {run_dir.root.name}"
    return _write(run_dir.root / "report.html", title, sections)


def write_comparison_report(folder):
    """Writes FOLDER/report.html from compare.csv, compare_summary.csv and compare.png;
    returns its path."""
    folder = Path(folder)
    runs = read_csv(folder / "compare.csv")
    summary = read_csv(folder / "compare_summary.csv") if (folder / "compare_summary.csv") \
        .is_file() else []
    sections = [("By training-set size", _figure(folder / "compare.png", "The mean over the "
                                                  "seeds, one standard deviation as error "
                                                  "bars, beside what answering without "
                                                  "looking scores.")),
                ("Mean and standard deviation over the seeds", _csv_table(summary)),
                ("Every run", _csv_table(runs))]
    return _write(folder / "report.html", "Comparison of networks by training-set size",
                  sections)


def _write(path, title, sections):
    body = "".join(f"<h2>{_e(name)}</h2>\n{content}\n" for name, content in sections)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{_e(title)}</h1>\n{body}</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _e(value):
    return html.escape(str(value))


def _table(header, rows, names=1):
    """An HTML table; the first `names` columns are text (left-aligned)."""
    def cells(values, tag):
        return "".join(f"<{tag}{NAME_CELL if i < names else ''}>{_e(v)}</{tag}>"
                       for i, v in enumerate(values))
    return ("<table><tr>" + cells(header, "th") + "</tr>"
            + "".join("<tr>" + cells(r, "td") + "</tr>" for r in rows) + "</table>")


def _csv_table(rows):
    if not rows:
        return "<p>None.</p>"
    header = list(rows[0])
    return _table(header, [[r[k] for k in header] for r in rows], names=1)


def _config_table(config, training):
    rows = [[k, v] for k, v in sorted(config.items())]
    for key in ("status", "step", "device", "train_seconds"):
        if key in training:
            rows.append([key, training[key]])
    return _table(["option", "value"], rows)


def _figure(path, caption):
    path = Path(path)
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure><img alt=\"{_e(path.stem)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _number(value, interval=None):
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return f"{text} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else text


def _metrics_section(evaluation):
    uncertainty = evaluation.get("uncertainty") or {}
    intervals = uncertainty.get("intervals")
    text = _metrics_table(evaluation, intervals)
    if uncertainty:
        text += (f"<p>Brackets: 95% bootstrap confidence intervals over {uncertainty['used']} "
                 f"resamples of the {uncertainty['patients']} test patients (of "
                 f"{uncertainty['resamples']} drawn; those lacking a class are skipped).</p>")
        if uncertainty.get("note"):
            text += f"<p class=\"note\">{_e(uncertainty['note'])}</p>"
    return text


def _metrics_table(report, intervals):
    """The headline figures, then a row per class, with intervals where given."""
    iv = intervals or {}
    macro = report["macro"]
    head = _table(["figure", "value"], [
        ["accuracy", _number(report["accuracy"], iv.get("accuracy"))],
        ["balanced accuracy (mean recall)", _number(report["balanced_accuracy"],
                                                    iv.get("balanced_accuracy"))],
        ["macro F1", _number(macro["f1"], iv.get("macro_f1"))],
        ["macro AUC", _number(macro["auc"], iv.get("macro_auc"))],
        [f"{'lesions' if report.get('unit') == 'lesion' else 'patches'}", report["n"]]])
    per_class = iv.get("per_class", {})
    rows = [[name, _number(m["precision"]),
             _number(m["recall"], per_class.get(name, {}).get("recall")),
             _number(m["f1"], per_class.get(name, {}).get("f1")),
             _number(m["auc"], per_class.get(name, {}).get("auc")), m["support"]]
            for name, m in report["per_class"].items()]
    return head + _table(["class", "precision", "recall", "F1", "AUC", "support"], rows)


def _explanations(eval_dir):
    """Sections for the galleries and Grad-CAM samples evaluate may have written."""
    sections = []
    for title, folder, index in (("Galleries: confident right, confident wrong, uncertain",
                                  "gallery", "galleries.json"),
                                 ("Where the network looks (Grad-CAM)", "cam", "cam.json")):
        images = sorted((eval_dir / folder).glob("*.png"))
        if not images:
            continue
        listing = _json(eval_dir / index)
        body = "".join(_figure(image, image.stem.replace("_", " ")) for image in images)
        if isinstance(listing, dict) and listing.get("rows"):
            body += _csv_table(listing["rows"])
        sections.append((title, body))
    return sections
