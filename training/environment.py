"""TensorFlow set up the way every command that trains or predicts wants it: graph mode (the
`tf.compat.v1` API of the networks), and quiet.

TensorFlow prints lines of its own while it loads and when it first looks for a GPU (oneDNN
notices, "Could not find cuda drivers", "failed call to cuInit" on a machine without one) that
ignore every log level, because they come before its logging is initialised. They are written to
the process's stderr by C++ code, so they are held back at the file-descriptor level while
TensorFlow loads and looks for devices, and shown only if loading fails.

    from training import environment
    tf = environment.configure()
"""
import contextlib
import os
import sys
import tempfile

_configured = False


def configure(quiet=True):
    """Imports TensorFlow, turns eager execution off and its Python logging down to errors;
    returns the module. With `quiet`, TensorFlow's start-up lines are held back (see above).
    Repeated calls do nothing more."""
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _held_stderr() if quiet and not _configured else contextlib.nullcontext():
        import tensorflow as tf

        tf.compat.v1.disable_eager_execution()
        tf.get_logger().setLevel("ERROR")  # the v1 API's deprecation notices are expected here
        # The first look for devices is what prints the CUDA lines on a machine without a GPU.
        tf.config.list_physical_devices("GPU")
    _configured = True
    return tf


@contextlib.contextmanager
def _held_stderr():
    """Sends file descriptor 2 to a temporary file for the block; replays it if the block
    raises (the lines may explain why), drops it otherwise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
