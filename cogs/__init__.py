"""Discord-facing extensions."""
