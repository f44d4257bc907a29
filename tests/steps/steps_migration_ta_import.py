"""Steps of the migration batch (see features/migration_*_ta_import.feature)."""
