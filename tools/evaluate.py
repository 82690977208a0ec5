"""Evaluates a trained run on the test set: accuracy, per-class precision/recall/F1, ROC AUC.

  python -m tools.evaluate --name demo

Restores the run's best checkpoint (the latest when there is no best), classifies
WORK/dataset/test.npz and writes runs/NAME/eval/metrics.json, confusion.png and
learning_curves.png. --precision rebuilds the network in that type with the checkpoint's weights
(batch norm folded, as the saved model), e.g. to compare a bfloat16 run with its float32 answers.
"""
from tools import cli
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
    p.add_argument("--precision", choices=PRECISIONS,
                   help="compute in this type with the checkpoint's weights (default: the run's "
                        "own, through the checkpoint's graph)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from training import environment

    environment.configure()
    from training.evaluation import EvalOptions, evaluate_run

    report = evaluate_run(args.runs, args.name, args.work,
                          EvalOptions(args.batch_size, args.bootstrap, args.seed,
                                      precision=args.precision))
    eval_dir = args.runs / args.name / "eval"
    cli.summary(f"evaluate: {args.name}", {
        "test accuracy": f"{report['accuracy']:.3f}",
        "macro F1": f"{report['macro']['f1']:.3f}",
        "balanced accuracy": f"{report['balanced_accuracy']:.3f}",
        "precision": report["precision"],
        "metrics": eval_dir / "metrics.json",
        "figures": f"{eval_dir}/{{learning_curves,confusion,roc,calibration}}.png",
        "report": args.runs / args.name / "report.html",
    })
    return 0


if __name__ == "__main__":
    cli.run(main)
