"""Plants ``$DROPSHIP_PLANTED_BUG`` (tests/chaos/planted.py) in a worker at start-up.

Only the bite tests put this folder on a worker's PYTHONPATH."""

import os

if os.environ.get("DROPSHIP_PLANTED_BUG"):
    from tests.chaos.planted import plant

    plant(os.environ["DROPSHIP_PLANTED_BUG"])
