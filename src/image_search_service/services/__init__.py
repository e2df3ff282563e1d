"""Use cases: indexing, search, routing, assets, status, re-embedding and its submission."""
