"""Evaluates a trained run on the test set and shows what explains its answers.

Accuracy, balanced accuracy, per-class precision/recall/F1 and ROC AUC, with 95% intervals from
a bootstrap over the test patients, with and without test-time augmentation.

  python -m tools.evaluate --name demo
  python -m tools.evaluate --name demo --tta --cam-end-point block3

Restores the run's best checkpoint (the latest when there is no best), classifies
WORK/dataset/test.npz and writes into runs/NAME/eval/: metrics.json (with a "tta" block under
--tta), confusion.png, learning_curves.png, roc.png, calibration.png, galleries.json and
gallery/*.png (per true class the most confident right, most confident wrong and most uncertain
patches), cam.json and cam/*.png (Grad-CAM of the predicted class on --cam-per-class patches of
each class); then runs/NAME/report.html. --precision rebuilds the network in that type with
the checkpoint's weights (batch norm folded, as the saved model), e.g. to compare a bfloat16
run with its float32 answers.
"""
from tools import cli
from tools.predict import add_explain_options
from training.options import PRECISIONS


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs")
    p.add_argument("--name", type=cli.run_name, required=True, help="the run folder under --runs")
    p.add_argument("--batch-size", type=cli.number(int, 1), default=256,
                   help="patches per inference batch")
    p.add_argument("--bootstrap", type=cli.number(int, 0), default=1000,
                   help="resamples of the test patients for the 95%% confidence intervals "
                        "(0: none)")
    p.add_argument("--seed", type=cli.number(int, 0), default=0,
                   help="fixes the bootstrap's resamples")
    add_explain_options(p)
    p.add_argument("--cam-per-class", type=cli.number(int, 0), default=4, metavar="N",
                   help="Grad-CAM figures of N test patches of each class, evenly spaced "
                        "through the class (0: none)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="compute in this type with the checkpoint's weights (default: the run's "
                        "own, through the checkpoint's graph)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from training import environment

    environment.configure()
    from training.evaluation import EvalOptions, evaluate_run

    options = EvalOptions(batch_size=args.batch_size, bootstrap=args.bootstrap, seed=args.seed,
                          tta=args.tta, cam_end_point=args.cam_end_point,
                          cam_per_class=args.cam_per_class, precision=args.precision)
    report = evaluate_run(args.runs, args.name, args.work, options)
    eval_dir = args.runs / args.name / "eval"
    lines = {
        "test accuracy": f"{report['accuracy']:.3f}",
        "macro F1": f"{report['macro']['f1']:.3f}",
        "balanced accuracy": f"{report['balanced_accuracy']:.3f}",
        "precision": report["precision"],
    }
    if "tta" in report:
        lines["with test-time augmentation"] = f"accuracy {report['tta']['accuracy']:.3f}, " \
                                               f"macro F1 {report['tta']['macro']['f1']:.3f}"
    cli.summary(f"evaluate: {args.name}", {
        **lines,
        "metrics": eval_dir / "metrics.json",
        "figures": f"{eval_dir}/{{learning_curves,confusion,roc,calibration}}.png",
        "galleries": eval_dir / "galleries.json",
        "Grad-CAM": eval_dir / "cam.json" if (eval_dir / "cam.json").is_file() else "none",
        "report": args.runs / args.name / "report.html",
    })
    return 0


if __name__ == "__main__":
    cli.run(main)
