"""Steps of the migration batch (see features/migration_*_app_db.feature)."""
