"""Steps of the migration batch (see features/migration_*_webchat.feature)."""
