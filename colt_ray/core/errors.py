"""The one exception type that means "the user's input is wrong"."""


class ConfigError(ValueError):
    """Bad user input. Its message is one line naming the field and what is allowed.

    The command line turns it into ``error: <message>`` on stderr and exit status 2, with no traceback.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")
