"""Vector stores: one small interface, two adapters (Qdrant Edge, Qdrant server)."""
