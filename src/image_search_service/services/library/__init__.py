"""The library: indexing folders and buckets, ingest on arrival, watched folders, assets."""
