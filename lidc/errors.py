"""The project's own error type: every failure a user can cause names the file and the reason."""


class LidcError(Exception):
    """Input the pipeline cannot use, with the file it came from.

    Args:
      path: the offending file or folder (str or Path), or None when no file is involved.
      reason: one sentence a user can act on.
    """

    def __init__(self, path, reason):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self):
        # Crosses process boundaries intact (worker pools pickle exceptions and results).
        return type(self), (self.path, self.reason)
