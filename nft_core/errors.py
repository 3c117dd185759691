"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (config, file, option, name). The message names what is wrong and what is allowed."""


class ConfigError(UserError):
    """A configuration value is invalid; the message starts with its TOML path."""
