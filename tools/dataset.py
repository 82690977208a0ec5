"""Stage 4, dataset: train/val/test sets of windowed, one-hot labelled patches, split by patient.

Reads WORK/patches/, splits by patient (no patient's slices on two sides; `--split random` is the
paper's per-crop split, which leaks slices of one nodule across sides), windows HU to [0, 1]
over [-1000, 400] HU, adds the channel axis, one-hots the labels, and writes
WORK/dataset/{train,val,test}.npz (x, y, label, patient_id, patch_index, lesion_id, mark_id),
WORK/dataset/split.csv (each patient's side) and WORK/dataset/summary.json.

    python -m tools.dataset --work data/work [--split patient|random] [--max-train N]
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
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    options = dataset.DatasetOptions(seed=args.seed, split=args.split,
                                     test_share=args.test_share, val_share=args.val_share,
                                     max_train=args.max_train, balance=args.balance)
    return cli.run_stage(args.work, lambda: dataset.run(args.work, options))


if __name__ == "__main__":
    cli.run(main)
