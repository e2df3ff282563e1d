"""Re-embedding jobs: one job body, run by RQ workers or an in-process runner."""
