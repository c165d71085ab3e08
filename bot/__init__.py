"""imagine-bot core."""
