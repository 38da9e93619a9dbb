"""CLI commands that live in their own modules; each exposes a click command named ``command``."""
