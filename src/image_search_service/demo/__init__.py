"""Offline demo helpers: a synthetic picture generator for tests, training and demos."""
