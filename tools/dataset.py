"""Stage 4, dataset: train/val/test sets of windowed, one-hot labelled patches, split by patient.

Reads WORK/patches/, makes one patch per lesion per slice (`--unit slice`: the readers' marks
merged, labelled by their majority) or per reader mark (`--unit mark`, the paper's), keeps the
lesions at least --min-readers readers marked as their class, splits by patient stratified by
class (`--split random` is the paper's per-crop split, which leaks slices of one nodule across
sides), windows HU to [0, 1] over [-1000, 400] HU, one-hots the labels, and writes
WORK/dataset/{train,val,test}.npz, split.csv and summary.json. See lidc/stages/dataset.py.

    python -m tools.dataset --work data/work [--unit slice|mark] [--min-readers N]
"""
from lidc.stages import dataset
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], "work", "seed")
    p.add_argument("--split", choices=["patient", "random"], default="patient",
                   help="patient: no patient on two sides; random: the paper's per-crop split")
    p.add_argument("--test-share", type=cli.number(float, 0, 1, True, True), default=0.3,
                   help="share of all patches in test (the paper's 70/30)")
    p.add_argument("--val-share", type=cli.number(float, 0, 1, True, True), default=0.15,
                   help="share of the training side carved out for validation")
    p.add_argument("--max-train", type=cli.number(int, 1), metavar="N",
                   help="keep a stratified subset of N training patches (comparison by size)")
    p.add_argument("--balance", choices=["none", "undersample"], default="none",
                   help="undersample: equalise the classes in train (val and test untouched)")
    p.add_argument("--unit", choices=dataset.UNITS, default="slice",
                   help="slice: one patch per lesion per slice, the readers' majority class (each "
                        "image counted once); mark: one per reader mark per slice (the paper's)")
    p.add_argument("--min-readers", type=cli.number(int, 1, 4), default=1,
                   help="keep only lesions at least this many readers marked as that class "
                        "(LUNA16: 3 of 4 for nodules >= 3 mm)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    options = dataset.DatasetOptions(seed=args.seed, split=args.split,
                                     test_share=args.test_share, val_share=args.val_share,
                                     max_train=args.max_train, balance=args.balance,
                                     unit=args.unit, min_readers=args.min_readers)
    return cli.run_stage(args.work, lambda: dataset.run(args.work, options))


if __name__ == "__main__":
    cli.run(main)
