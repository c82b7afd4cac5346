"""tilehall config package."""
