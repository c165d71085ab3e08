-- 0003: write fewer index pages per job. Every index on jobs is one more page
-- written to the WAL by each reserve and each settle, and those page writes
-- (with the checkpoints they bring) are most of the time a transaction takes.
--
--   * jobs_status (every job, by status) is not needed: only open jobs are
--     ever looked up by status (recovery, the list of active jobs, the
--     per-member limit), and the partial index jobs_open_member holds exactly
--     those. A settle also moved the job inside jobs_status (a delete and an
--     insert, often on two pages).
--   * jobs_open_owner (open jobs by owner) is not needed either: recovery
--     looks at every open job (its owner test has ORs an index cannot serve),
--     and jobs_open_member lists them all.
--
-- The queries that rely on jobs_open_member name it (INDEXED BY), so dropping
-- or renaming it fails loudly instead of turning them into full scans of jobs.
-- PostgreSQL keeps its own set (its planner has statistics); no full index on
-- status exists there either.

DROP INDEX jobs_status;
DROP INDEX jobs_open_owner;
