"""People, tags and captions: re-read from files, edited by users, pushed to payloads."""
