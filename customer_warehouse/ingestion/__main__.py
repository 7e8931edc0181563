"""`python -m customer_warehouse.ingestion`: load CW_RAW_DIR into the warehouse's raw tables
(the survey tables are made when absent). Reads the settings; writes what ``load_raw`` writes."""

import sys

from customer_warehouse.ingestion.raw_tables import main

sys.exit(main())
