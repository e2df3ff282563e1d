"""Business logic: encoders, routing, ingestion, search, re-embedding."""
