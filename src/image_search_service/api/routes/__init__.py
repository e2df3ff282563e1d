"""HTTP routes: parse, call a service, shape the response."""

# Each router carries its full prefix (not one added at include time), so a route's
# own ``path`` is the full template the metrics label with.
API_PREFIX = "/api/v1"
