#!/usr/bin/env bash
# Run the whole test suite. PostgreSQL and Redis tests run when TEST_POSTGRES_URL /
# TEST_REDIS_URL are set (.ci/run starts both servers and sets them).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@"
