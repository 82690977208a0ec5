"""Finds a learning rate: the learning-rate range test (Smith 2015; fastai's lr_find).

  python -m tools.lr_find --net resnet50
  python -m tools.lr_find --net lenet5 --start 1e-6 --end 1 --steps 300 --out lenet5_lr.png

Trains the network from its initial weights on WORK/dataset/train.npz for --steps steps while
the learning rate grows exponentially from --start to --end, stopping early once the smoothed
loss passes 4x its minimum. Writes the loss against the rate (log axis) to --out and the numbers
beside it (.json), and prints the suggested rate: where the smoothed loss falls fastest, before
its minimum (the minimum's rate / 10 is printed too). Give it to tools.train as --lr.
"""
import math
from pathlib import Path

from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "seed")
    p.add_argument("--net", required=True,
                   help="the network: lenet5, vgg16, resnet50, resnet101, resnet152, alexnet")
    p.add_argument("--start", type=cli.number(float, 0, low_open=True), default=1e-7,
                   help="the first learning rate")
    p.add_argument("--end", type=cli.number(float, 0, low_open=True), default=1.0,
                   help="the last learning rate")
    p.add_argument("--steps", type=cli.number(int, 5), default=200,
                   help="training steps of the sweep")
    p.add_argument("--batch-size", type=cli.number(int, 1), default=16,
                   help="patches per step (as you will train)")
    p.add_argument("--out", type=Path,
                   help="the plot (PNG); default WORK/lr_find/NET.png; the numbers go beside it "
                        "as .json")
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.start >= args.end:
        p.error(f"--start {args.start:g} must be below --end {args.end:g}")
    from training import environment

    environment.configure()
    from lidc.errors import LidcError
    from training.lr_find import SweepOptions, find
    from training.runner import resolve_net

    try:
        resolve_net(args.net)
    except LidcError as e:
        p.error(str(e))
    out = args.out or args.work / "lr_find" / f"{args.net}.png"
    result = find(args.net, args.work, SweepOptions(args.start, args.end, args.steps,
                                                    args.batch_size, args.seed), out)
    suggestion = "none (no step ran)" if result.suggestion is None else \
        f"{result.suggestion:.2g} (steepest descent of the smoothed loss)"
    cli.summary(f"lr_find: {args.net}", {
        "steps run": f"{len(result.rates)} of {args.steps}: {result.stopped}",
        "suggested --lr": suggestion,
        "minimum / 10": "none" if result.minimum_tenth is None else f"{result.minimum_tenth:.2g}",
        "plot": out,
        "numbers": out.with_suffix(".json"),
    })
    return 0 if result.suggestion is not None and math.isfinite(result.suggestion) else 1


if __name__ == "__main__":
    cli.run(main)
