"""Background-work plumbing that knows no use case: the RQ queue, the worker, retries."""
