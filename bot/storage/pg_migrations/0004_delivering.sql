-- 0004 (PostgreSQL): delivery is recorded before the result is posted; the same
-- column as migrations/0004_delivering.sql for SQLite.
--
--   * jobs.delivering_at: when the bot began posting the job's result (NULL: not
--     yet). An open job with a delivering_at is "delivering": at recovery it is
--     committed if its result message is in the channel, refunded if not.
--   * jobs.message_id is written as soon as the result is posted, so an open job
--     that has one no longer counts against the member's open-job limit.

ALTER TABLE jobs ADD COLUMN delivering_at timestamptz;
