"""Compares networks by training-set size: train each on stratified subsets, test each.

  python -m tools.compare --nets lenet5,vgg16,resnet50 --sizes 100,200,all --seeds 0,1,2

For each network, size and seed, trains run PREFIX-NET-nSIZE-sSEED on a stratified subset of the
training set of that size (the same options for all), evaluates it on the whole test set and
writes WORK/compare/compare.csv (one row per run), compare_summary.csv (mean and standard
deviation over the seeds) and compare.png (--metric against the size, with error bars and the
chance and majority baselines). Runs that finished and were evaluated are reused when the
command is run again (an interrupted one is resumed); --force retrains them all. With --engine
ray each run is a Ray task (--address HOST:PORT: on a cluster), a machine or a GPU each, with the
same results.
"""
from tools import cli

METRICS = ("balanced_accuracy", "test_accuracy", "macro_f1", "macro_auc")


def sizes(text):
    """An argparse type: comma-separated training-set sizes, 'all' for the whole training set."""
    return [part.strip() if part.strip() == "all" else cli.number(int, 1)(part.strip())
            for part in cli.comma_list()(text)]


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs", "seed", "engine", "force")
    p.add_argument("--nets", type=cli.comma_list(), default=["lenet5", "vgg16", "resnet50"],
                   help="comma-separated networks")
    p.add_argument("--sizes", type=sizes, default=[100, 200, 400],
                   help="comma-separated training-set sizes (patches); 'all': the whole set")
    p.add_argument("--seeds", type=cli.comma_list(int, 0),
                   help="comma-separated seeds: every (net, size) is trained once per seed "
                        "(default: --seed only)")
    p.add_argument("--metric", choices=METRICS, default="balanced_accuracy",
                   help="the test figure compare.png plots against the size")
    p.add_argument("--prefix", type=cli.run_name, default="compare",
                   help="run names are PREFIX-NET-nSIZE-sSEED")
    # Each run's training-set size is one of --sizes: a --train-size would mean nothing here.
    cli.add_training_options(p, leave_out=("train_size",))
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    from training import environment

    environment.configure()
    from lidc.errors import LidcError
    from training.comparison import Grid, run_comparison, whole
    from training.loop import Hooks
    from training.runner import resolve_net

    for net in args.nets:
        try:
            resolve_net(net)
        except LidcError as e:
            p.error(str(e))
    # Where the runs train is not one of their options: the same runs either way.
    options = {k: v for k, v in vars(args).items()
               if k not in ("nets", "sizes", "seeds", "prefix", "force", "metric", "engine",
                            "address")}
    grid = Grid(args.nets, whole(args.sizes, args.work), args.seeds or [args.seed], args.prefix,
                args.force)
    with cli.engine(args):
        rows = run_comparison(options, grid, Hooks(progress=cli.progress), args.metric)
    out = args.work / "compare"
    cli.summary(f"compare: test {args.metric.replace('_', ' ')} by training-set size", {
        **{r["run"]: f"accuracy {r['test_accuracy']:.3f}, balanced accuracy "
                     f"{r['balanced_accuracy']:.3f}, macro AUC {r['macro_auc']}, "
                     f"{r['steps']} steps" for r in rows},
        "table": out / "compare.csv",
        "mean and sd over the seeds": out / "compare_summary.csv",
        "plot": out / "compare.png",
    })
    return 0


if __name__ == "__main__":
    cli.run(main)
