"""The one exception type that means "the user's input is wrong"."""


class ConfigError(ValueError):
    """Bad user input. Its message is one line naming the field and what is allowed.

    The command line turns it into ``error: <message>`` on stderr and exit status 2, with no traceback.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self):
        # two-argument __init__: tell pickle how to rebuild it, so it can cross a Ray actor boundary
        return (type(self), (self.field, self.message))


class RunError(RuntimeError):
    """A run that started but cannot go on (e.g. a shard actor that keeps dying). The command line prints
    its one-line message and exits with status 1; every completed cycle's results stay written."""
