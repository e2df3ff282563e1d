"""Settings, logging and domain errors shared by every layer."""
