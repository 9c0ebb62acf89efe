"""The two ways a bundle can fail to open, each one line naming the file and the problem."""


class BundleError(ValueError):
    """A folder that is not an intact dfedge bundle, or an input the bundle cannot take."""


class RuntimeUnavailable(RuntimeError):
    """The bundle's runtime cannot predict on this machine (e.g. Core ML off macOS)."""
