"""User-facing errors: a message that says what went wrong and what to do next."""


class PipelineError(Exception):
    """An error the CLI prints without a traceback.

    ``hint`` says what the user can do about it (a flag to pass, a command to run).
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"
