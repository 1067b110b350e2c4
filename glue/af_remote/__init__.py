"""af-remote: start an OpenCode agent in a remote sandbox and attach to it."""

__version__ = "0.1.0"
