package models

// SetMigrateHook lets tests observe Migrate inside its lock.
func SetMigrateHook(s *Store, f func(stage string)) { s.migrateHook = f }
