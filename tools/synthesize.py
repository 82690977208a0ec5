"""Writes the LIDC-shaped demo cohort: CT series in the TCIA layout with radiologist XML reads.

Every patient is a 3-D chest phantom with lesions of the three kinds (nodule >= 3 mm, nodule < 3 mm,
non-nodule >= 3 mm), stored as real DICOM CT slices beside a real-format LIDC XML read by up to four
simulated radiologists; a few patients also have a chest X-ray study that the CT stages must skip.
The ground truth goes to ROOT/cohort.json. Patients already written are skipped (resume) unless
--force; patient k depends only on --seed and k, so more --patients only adds patients.

Usage:

    python -m tools.synthesize                       # 12 patients into data/LIDC-IDRI
    python -m tools.synthesize --patients 40 --size 512 --slices 128 --root /tmp/lidc --workers 2
"""
from lidc import synthetic
from lidc.records import CLASS_NAMES
from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0] + " The ground truth goes to ROOT/cohort.json; "
                   "finished patients are skipped unless --force.",
                   "root", "workers", "seed", "force")
    p.add_argument("--patients", type=int, default=synthetic.DEFAULT_PATIENTS,
                   help="how many patients, LIDC-IDRI-0001 onward")
    p.add_argument("--size", type=int, default=synthetic.DEFAULT_SIZE,
                   help=f"rows and columns of each CT slice (>= {synthetic.MIN_SIZE}); the "
                        f"pixel spacing is {synthetic.FIELD_OF_VIEW_MM:g} mm / size")
    p.add_argument("--slices", type=int, default=synthetic.DEFAULT_SLICES,
                   help=f"CT slices per series (>= {synthetic.MIN_SLICES}), 2 or 2.5 mm apart")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.patients < 1:
        parser.error("--patients must be at least 1")
    if args.size < synthetic.MIN_SIZE:
        parser.error(f"--size must be at least {synthetic.MIN_SIZE}")
    if args.slices < synthetic.MIN_SLICES:
        parser.error(f"--slices must be at least {synthetic.MIN_SLICES}")
    result = synthetic.write_cohort(args.root, patients=args.patients, size=args.size,
                                    slices=args.slices, seed=args.seed, force=args.force,
                                    workers=args.workers)
    counts = {"patients written": result["patients_written"],
              "patients skipped (already complete)": result["patients_skipped"],
              "files written": result["files"]}
    if result["patients_removed"]:
        counts["patients removed (past --patients, from a larger cohort)"] = \
            result["patients_removed"]
    for name in CLASS_NAMES:
        counts[f"{name}: lesions / reader marks / patches to expect"] = (
            f"{result['lesions'][name]} / {result['marks'][name]} / "
            f"{result['patches_expected'][name]}")
    counts["ground truth"] = result["cohort"]
    cli.summary(f"Demo cohort in {args.root}", counts)
    return 0


if __name__ == "__main__":
    cli.run(main)
