-- Session windows per user with a 30-second gap: a row opens [ts, ts + 30 s), and sessions of
-- a user that overlap or touch merge (a late-coming row can bridge two). The watermark trails the
-- largest event time by 30 seconds.
-- golden: late 1
CREATE STREAM sc_clicks (user_id VARCHAR, page VARCHAR, ts TIMESTAMP)
  WITH (topic='in_session_count', timestamp='ts', watermark='ts - INTERVAL ''30'' SECOND');

CREATE STREAM out_session_count WITH (topic='out_session_count') AS
SELECT user_id, window_start, window_end, COUNT(*) AS clicks
FROM SESSION(TABLE sc_clicks PARTITION BY user_id, DESCRIPTOR(ts), INTERVAL '30' SECOND)
GROUP BY user_id, window_start, window_end;
