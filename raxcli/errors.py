"""Errors the user caused and can fix: shown as one line, exit status 2, no traceback."""


class UserError(Exception):
    exit_code = 2
