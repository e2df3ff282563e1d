"""Semantic photo search."""
