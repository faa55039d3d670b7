-- Views per page per hour, written as Parquet files partitioned by date and hour.
--
--   strom sql -f sql/examples/top_pages_parquet.sql
-- Files appear under /tmp/strom-top-pages/date=YYYY-MM-DD/hour=HH/ when they roll (every
-- 10 seconds here, or 100000 rows). The top pages of an hour are then one ad-hoc query away,
-- over the topic's history:
--   SELECT page, count(*) AS views FROM clicks
--   WHERE ts >= TIMESTAMP '2026-01-01 10:00:00' AND ts < TIMESTAMP '2026-01-01 11:00:00'
--   GROUP BY page ORDER BY views DESC LIMIT 10;

CREATE STREAM IF NOT EXISTS clicks (user_id VARCHAR, page VARCHAR, ts TIMESTAMP)
  WITH (topic = 'clicks', format = 'json', timestamp = 'ts',
        watermark = 'ts - INTERVAL ''5'' SECOND', partitions = 1);

CREATE STREAM page_views_hourly
  WITH (connector = 'parquet', path = '/tmp/strom-top-pages', roll_seconds = 10, roll_rows = 100000) AS
  SELECT window_start, page, count(*) AS views
  FROM TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' HOUR)
  GROUP BY window_start, window_end, page;

SHOW QUERIES;
