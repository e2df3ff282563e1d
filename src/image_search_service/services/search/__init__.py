"""Search: by text, example images or a stored asset; query understanding; the search log."""
