-- Clickstream: page views per user per minute.
--
-- Run it against a server (`strom server`), then produce clicks:
--   strom sql -f sql/examples/clickstream.sql          (or: psql -h 127.0.0.1 -p 5433 -f ...)
--   echo '{"user_id":"ada","page":"/home","ts":"2026-01-01T10:00:05Z"}' | strom produce clicks
-- Each minute's counts are written to the topic clicks_per_minute once the watermark (the
-- latest click time minus 5 seconds) passes the end of the minute.

CREATE STREAM IF NOT EXISTS clicks (user_id VARCHAR, page VARCHAR, ts TIMESTAMP)
  WITH (topic = 'clicks', format = 'json', timestamp = 'ts',
        watermark = 'ts - INTERVAL ''5'' SECOND', partitions = 1);

CREATE STREAM clicks_per_minute WITH (topic = 'clicks_per_minute', late_topic = 'clicks_late') AS
  SELECT window_start, window_end, user_id, count(*) AS views, count(DISTINCT page) AS pages
  FROM TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
  GROUP BY window_start, window_end, user_id;

SHOW QUERIES;
