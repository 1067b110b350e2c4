"""A local stand-in for the `sprite` CLI and the in-sprite runtime, for tests."""
