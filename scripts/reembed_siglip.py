"""Re-embed the library with SigLIP (step 2 of the rollout).

The same as ``image-search reembed --to siglip``; every option passes through:

    python scripts/reembed_siglip.py                 # queue (RQ) or run here (embedded)
    python scripts/reembed_siglip.py --force         # also assets already done
    python scripts/reembed_siglip.py status --watch  # progress, rate, ETA, failures
    python scripts/reembed_siglip.py retry-failed    # queue the failed assets again
"""

from __future__ import annotations

import sys

from image_search_service.cli import main

if __name__ == "__main__":
    main(["reembed", "--to", "siglip", *sys.argv[1:]], prog_name=sys.argv[0])
