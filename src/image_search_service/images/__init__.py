"""Reading image files safely, and finding them on disk."""
