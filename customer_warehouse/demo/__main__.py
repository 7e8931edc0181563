"""``python -m customer_warehouse.demo``: see :mod:`customer_warehouse.demo.cli`."""

import sys

from customer_warehouse.demo.cli import main

sys.exit(main())
