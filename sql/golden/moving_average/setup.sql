-- Window functions over a stream's own rows (Flink's OVER windows): each trade with the
-- average of its symbol's last three prices and the count of its trades in the last 10
-- seconds. A row gets its results once the watermark passes its time (here the watermark is
-- the newest time seen); a row behind the watermark is late.
-- golden: ordered
-- golden: late 1
CREATE STREAM ma_trades (sym VARCHAR, price DOUBLE, ts TIMESTAMP)
  WITH (topic='in_moving_average', timestamp='ts');

CREATE STREAM out_moving_average WITH (topic='out_moving_average') AS
SELECT sym, price,
  AVG(price) OVER (PARTITION BY sym ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg3,
  COUNT(*) OVER (PARTITION BY sym ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS n10
FROM ma_trades;
