-- Tumbling one-minute windows counted per user. The watermark is the largest event time seen
-- (no delay): a window's row is written once the watermark reaches its end, and rows for a
-- window that has ended are late (dropped).
-- golden: late 3
CREATE STREAM tc_clicks (user_id VARCHAR, ts TIMESTAMP) WITH (topic='in_tumble_count', format='json', timestamp='ts');

CREATE STREAM out_tumble_count WITH (topic='out_tumble_count') AS
SELECT user_id, window_start, window_end, COUNT(*) AS cnt
FROM TUMBLE(TABLE tc_clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
GROUP BY user_id, window_start, window_end;
