-- Distinct users per page and minute. DataFusion plans COUNT(DISTINCT ..) as a count over a
-- grouping by user: an aggregate over a windowed aggregate, grouped by the same window.
CREATE STREAM du_clicks (user_id VARCHAR, url VARCHAR, ts TIMESTAMP)
  WITH (topic='in_distinct_users', timestamp='ts');

CREATE STREAM out_distinct_users WITH (topic='out_distinct_users') AS
SELECT url, window_end, COUNT(DISTINCT user_id) AS users
FROM TUMBLE(TABLE du_clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
GROUP BY url, window_start, window_end;
