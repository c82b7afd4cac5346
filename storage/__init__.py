"""tilehall storage package."""
