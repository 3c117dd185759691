"""Errors the CLI prints as one line: a user's (exit code 2) and a job's (exit code 1)."""


class UserError(Exception):
    """Bad input (config, file, option, name). The message names what is wrong and what is allowed."""


class ConfigError(UserError):
    """A configuration value is invalid; the message starts with its TOML path."""


class JobError(Exception):
    """The job cannot go on for a reason outside the user's input (a rank died or hangs): one line that
    names what failed, exit code 1."""
