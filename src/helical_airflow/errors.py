"""Errors a user can act on: a stable code, what is wrong, and a one-line fix."""

from __future__ import annotations

#: exit code of `embed-shard` when it stopped early to be recycled (its memory bound or shard count was reached,
#: embed.Recycle): the launcher starts a fresh process for the shards left (EX_TEMPFAIL)
RECYCLE_EXIT = 75


class HelicalAirflowError(Exception):
    """An error with a stable code and a fix hint; the CLI prints it without a traceback."""

    exit_code = 2

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return f"error {self.code}: {self.message}\n  fix: {self.hint}"


class InputValidationError(HelicalAirflowError):
    """The input dataset cannot be embedded as it is."""


class ConfigError(HelicalAirflowError):
    """A parameter, model name or environment setting is wrong."""


class ShardError(HelicalAirflowError):
    """A shard failed while embedding."""

    exit_code = 3
