"""tilehall transport package."""
