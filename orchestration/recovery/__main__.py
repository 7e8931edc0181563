"""``python -m orchestration.recovery`` (:func:`orchestration.recovery.cli.main`)."""

import sys

from orchestration.recovery.cli import main

sys.exit(main())
