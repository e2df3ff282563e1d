"""Use cases, one package (or module) per domain: library, metadata, search, rollout, reembed."""
