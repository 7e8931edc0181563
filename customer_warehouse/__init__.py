"""Customer warehouse: raw retail orders in; customer features, tiers, loyalty points and
purchase predictions out. The SQL lives in dbt (`models/`); this package holds the small,
tested Python pieces (configuration, raw loading, demo data, surveys, loyalty, predictions)."""
