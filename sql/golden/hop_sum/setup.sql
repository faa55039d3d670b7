-- Hopping windows of one minute every 30 seconds, summed per user, with a watermark 5 seconds
-- behind the largest event time. A row belongs to two windows and can be late for the older
-- one only.
-- golden: late 2
CREATE STREAM hs_payments (user_id VARCHAR, amount BIGINT, ts TIMESTAMP)
  WITH (topic='in_hop_sum', format='json', timestamp='ts', watermark='ts - INTERVAL ''5'' SECOND');

CREATE STREAM out_hop_sum WITH (topic='out_hop_sum') AS
SELECT user_id, window_start, window_end, SUM(amount) AS total, COUNT(*) AS n
FROM HOP(TABLE hs_payments, DESCRIPTOR(ts), INTERVAL '30' SECOND, INTERVAL '1' MINUTE)
GROUP BY user_id, window_start, window_end;
