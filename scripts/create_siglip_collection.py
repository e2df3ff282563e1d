"""Create the SigLIP collection from the settings (step 1 of the rollout).

The same as ``image-search create-collection --model siglip``; every option passes
through:

    python scripts/create_siglip_collection.py             # create (idempotent)
    python scripts/create_siglip_collection.py --dry-run   # print the plan, touch nothing
    python scripts/create_siglip_collection.py --check     # exit 1 if missing or different
    python scripts/create_siglip_collection.py --json
    python scripts/create_siglip_collection.py --drop [--yes]
"""

from __future__ import annotations

import sys

from image_search_service.cli import main

if __name__ == "__main__":
    main(["create-collection", "--model", "siglip", *sys.argv[1:]], prog_name=sys.argv[0])
