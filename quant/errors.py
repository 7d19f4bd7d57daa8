"""The one error type of a conversion the user can fix (bad input, not a bug in rax)."""


class ConversionError(ValueError):
    """A checkpoint or GGUF that cannot be converted; the message is one line naming the file
    or tensor and the reason."""
