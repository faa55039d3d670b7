-- One count per minute over all users: a window with no other grouping column.
CREATE STREAM wt_clicks (user_id VARCHAR, ts TIMESTAMP)
  WITH (topic='in_window_total', timestamp='ts');

CREATE STREAM out_window_total WITH (topic='out_window_total') AS
SELECT window_start, COUNT(*) AS n
FROM TUMBLE(TABLE wt_clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
GROUP BY window_start, window_end;
