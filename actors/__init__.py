"""tilehall actors package."""
