"""Evaluates a trained run on the test set: accuracy, per-class precision/recall/F1, ROC AUC,
with and without test-time augmentation, and what explains its answers.

  python -m tools.evaluate --name demo
  python -m tools.evaluate --name demo --tta --cam-end-point block3

Restores the run's best checkpoint (the latest when there is no best), classifies
WORK/dataset/test.npz and writes into runs/NAME/eval/: metrics.json (with a "tta" block under
--tta), confusion.png, learning_curves.png, galleries.json and gallery/*.png (per true class the
most confident right, most confident wrong and most uncertain patches), cam.json and cam/*.png
(Grad-CAM of the predicted class on --cam-per-class patches of each class).
"""
from tools import cli
from tools.predict import add_explain_options


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs")
    p.add_argument("--name", type=cli.run_name, required=True, help="the run folder under --runs")
    p.add_argument("--batch-size", type=cli.number(int, 1), default=256,
                   help="patches per inference batch")
    add_explain_options(p)
    p.add_argument("--cam-per-class", type=cli.number(int, 0), default=4, metavar="N",
                   help="Grad-CAM figures of N test patches of each class, evenly spaced "
                        "through the class (0: none)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from training import environment

    environment.configure()
    from training.evaluation import EvalOptions, evaluate_run

    options = EvalOptions(batch_size=args.batch_size, tta=args.tta,
                          cam_end_point=args.cam_end_point, cam_per_class=args.cam_per_class)
    report = evaluate_run(args.runs, args.name, args.work, options)
    eval_dir = args.runs / args.name / "eval"
    lines = {
        "test accuracy": f"{report['accuracy']:.3f}",
        "macro F1": f"{report['macro']['f1']:.3f}",
    }
    if "tta" in report:
        lines["with test-time augmentation"] = f"accuracy {report['tta']['accuracy']:.3f}, " \
                                               f"macro F1 {report['tta']['macro']['f1']:.3f}"
    cli.summary(f"evaluate: {args.name}", {
        **lines,
        "metrics": eval_dir / "metrics.json",
        "figures": f"{eval_dir / 'confusion.png'}, {eval_dir / 'learning_curves.png'}",
        "galleries": eval_dir / "galleries.json",
        "Grad-CAM": eval_dir / "cam.json" if (eval_dir / "cam.json").is_file() else "none",
    })
    return 0


if __name__ == "__main__":
    cli.run(main)
