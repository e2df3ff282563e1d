"""Offline demo helpers: a synthetic picture generator for tests, training and demos."""

# What the page and GET /api/v1/about say about the shipped demo models.
DEMO_NOTE = (
    "This is the demo library, searched with two tiny models that know only 8 colours and "
    '5 shapes (circle, square, triangle, star, cross): try "a red circle" or "a blue '
    'star". They return noise for anything else, and for real photos.'
)
