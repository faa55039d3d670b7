-- Tumbling 30-second windows with a 10-second watermark delay; late rows go to the late topic
-- `late_late_topic` instead of being dropped silently.
-- golden: late 3
CREATE STREAM lt_readings (sensor VARCHAR, value BIGINT, ts TIMESTAMP)
  WITH (topic='in_late_topic', timestamp='ts', watermark='ts - INTERVAL ''10'' SECOND');

CREATE STREAM out_late_topic WITH (topic='out_late_topic', late_topic='late_late_topic') AS
SELECT sensor, window_start, window_end, COUNT(*) AS n, SUM(value) AS total
FROM TUMBLE(TABLE lt_readings, DESCRIPTOR(ts), INTERVAL '30' SECOND)
GROUP BY sensor, window_start, window_end;
