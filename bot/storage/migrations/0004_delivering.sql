-- 0004: delivery is recorded before the result is posted, so that a crash between
-- the post and Discord's answer is settled from the channel, not guessed.
--
--   * jobs.delivering_at: when the bot began posting the job's result (NULL: not
--     yet). An open job with a delivering_at is "delivering": at recovery it is
--     committed if its result message is in the channel, refunded if not.
--   * jobs.message_id is written as soon as the result is posted, so an open job
--     that has one no longer counts against the member's open-job limit.
--
-- The partial index jobs_open_member (0002) still holds every open job.

ALTER TABLE jobs ADD COLUMN delivering_at TEXT
    CHECK (delivering_at LIKE '____-__-__T__:__:__.______+00:00');
