"""The case viewer: a patient's CT slices in a lung window, every reader's marks in the reader's
colour, and a trained run's class probabilities for each marked patch.

  content   what the page is sent: cases, a case, runs, probabilities, slices (JSON and bytes)
  models    the runs with a model, and their probabilities (TensorFlow imported on first use)
  server    the local web server (127.0.0.1 only) and the checks of every request
  static    one case as files that open from the file system, with no server
  page.html the page itself: HTML, CSS and JavaScript in one file, nothing fetched from elsewhere

The data (slices as HU, marks and patches by slice) come from lidc.cases.

    from training.viewer import server
    httpd = server.make_server(server.Viewer(Path("data/work"), Path("runs")), port=8765)
    httpd.serve_forever()
"""
