-- 0005 (PostgreSQL): a process's liveness is a lock, not only a heartbeat.
--
-- A process holds a session advisory lock (class 'ownr', key lock_key) on a
-- connection of its own for as long as it runs; the server drops it the moment
-- that connection ends, so a crashed process's jobs are recoverable at once
-- instead of after a minute of silence. Rows written by older versions have no
-- lock_key and are judged by their heartbeat alone, as before.
--
-- API slots are now session advisory locks too (class 'apis'), released with
-- their connection: api_slots (0003) is no longer written. It stays while an
-- older process may still run against this database during an upgrade.

ALTER TABLE job_owners ADD COLUMN lock_key integer CHECK (lock_key >= 0);
