"""``python -m triage.simulator ...``: the simulator's command line (``cli.main``) with INFO logging."""

import logging
import sys

from triage.simulator.cli import main

log = logging.getLogger(__name__)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
