"""Shows cases in a local web page: CT slices, every reader's marks, a trained run's probabilities.

  python -m tools.view --work data/work --runs runs                 # open the address it prints
  python -m tools.view --static case-0001 --patient LIDC-IDRI-0001  # files to open with no server

The page lets you pick a patient, scroll through its slices in a lung window (level and width
adjustable), see every reader's contours and points in the reader's colour (pointing at one tells
its class, lesion and reader), and pick a trained run to see its class probabilities for each
marked patch of the slice. The server listens on 127.0.0.1 only; Ctrl-C stops it. With --static
DIR it writes DIR/index.html and DIR/slices/ for one patient, with every run's probabilities,
to open from the file system instead.
"""
from pathlib import Path

from tools import cli


def build_parser():
    p = cli.parser(__doc__.split("\n")[0], "work", "runs")
    p.add_argument("--port", type=cli.number(int, 0, 65535), default=8765,
                   help="the port on 127.0.0.1 (0 picks a free one)")
    p.add_argument("--static", type=Path, metavar="DIR",
                   help="write one patient's viewer to DIR instead of serving (needs --patient)")
    p.add_argument("--patient", help="with --static: the patient id, as in WORK/index.csv")
    p.add_argument("--series", help="with --static: the series uid, when the patient has several "
                                    "(else the first)")
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.static and not args.patient:
        p.error("--static needs --patient")
    if (args.patient or args.series) and not args.static:
        p.error("--patient and --series go with --static (the page lets you pick a patient)")
    if args.static:
        from training.viewer.static import write_static

        written = write_static(args.work, args.runs, args.static, args.patient, args.series)
        cli.summary(f"view: {args.static / 'index.html'}",
                    {**written, "runs": ", ".join(written["runs"]) or "none"})
        return 0
    from training.viewer import server

    httpd = server.make_server(server.Viewer(args.work, args.runs), args.port)
    print(f"viewer: http://{server.HOST}:{httpd.server_address[1]}/ (work {args.work}, runs "
          f"{args.runs}); Ctrl-C stops it", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        print("viewer stopped")
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    cli.run(main)
