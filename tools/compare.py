"""Compares networks by training-set size: train each on stratified subsets, test each.

  python -m tools.compare --nets lenet5,vgg16,resnet50 --sizes 100,200,400 --max-steps 500

For each network and each size, trains run PREFIX-NET-nSIZE on a stratified subset of the
training set of that size (the same options and seed for all), evaluates it on the whole test
set and writes WORK/compare/compare.csv and compare.png (test accuracy against training-set size,
one line per network). Runs that finished and were evaluated are reused when the command is run
again (an interrupted one is resumed); --force retrains them all. With --engine ray each run is a
Ray task (--address HOST:PORT: on a cluster), a machine or a GPU each, with the same results.
"""
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs", "seed", "engine", "force")
    p.add_argument("--nets", type=cli.comma_list(), default=["lenet5", "vgg16", "resnet50"],
                   help="comma-separated networks")
    p.add_argument("--sizes", type=cli.comma_list(int, 1), default=[100, 200, 400],
                   help="comma-separated training-set sizes (patches)")
    p.add_argument("--prefix", type=cli.run_name, default="compare",
                   help="run names are PREFIX-NET-nSIZE")
    # Each run's training-set size is one of --sizes: a --train-size would mean nothing here.
    cli.add_training_options(p, leave_out=("train_size",))
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    from training import environment

    environment.configure()
    from lidc.errors import LidcError
    from training.comparison import Grid, run_comparison
    from training.loop import Hooks
    from training.runner import resolve_net

    for net in args.nets:
        try:
            resolve_net(net)
        except LidcError as e:
            p.error(str(e))
    # Where the runs train is not one of their options: the same runs either way.
    options = {k: v for k, v in vars(args).items()
               if k not in ("nets", "sizes", "prefix", "force", "engine", "address")}
    grid = Grid(args.nets, args.sizes, args.prefix, args.force)
    with cli.engine(args):
        rows = run_comparison(options, grid, Hooks(progress=cli.progress))
    out = args.work / "compare"
    cli.summary("compare: test accuracy by training-set size", {
        **{f"{r['net']} n={r['size']}": f"accuracy {r['test_accuracy']:.3f}, macro F1 "
                                        f"{r['macro_f1']:.3f}, {r['steps']} steps ({r['run']})"
           for r in rows},
        "table": out / "compare.csv",
        "plot": out / "compare.png",
    })
    return 0


if __name__ == "__main__":
    cli.run(main)
