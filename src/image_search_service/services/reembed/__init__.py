"""Re-embedding the library with a model: plan, job body, runners, progress, collections."""
