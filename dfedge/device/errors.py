"""The two ways a bundle can fail to open, each one line naming the file and the problem; what such a line may echo
of its input."""

ECHO = 80  # characters of an input's own text that an error line repeats


def shown(text: str, limit: int = ECHO) -> str:
    """Text taken from an input (a key, a value's repr) as an error line repeats it: cut to `limit` characters with an
    ellipsis, so that a 10 MB key is not a 10 MB line, and with its line breaks and other control characters escaped
    (a key "\n" would split the line). The one rule for the kit's and the bundle's messages."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


class BundleError(ValueError):
    """A folder that is not an intact dfedge bundle, or an input the bundle cannot take."""


class RuntimeUnavailable(RuntimeError):
    """The bundle's runtime cannot predict on this machine (e.g. Core ML off macOS)."""
