-- Top 2 items per category by running total (ROW_NUMBER over an updating aggregate): a
-- change writes only the rows whose rank changed; a row that drops out of the top 2 is
-- deleted (a tombstone).
-- golden: ordered
CREATE STREAM tn_sales (cat VARCHAR, item VARCHAR, qty BIGINT, ts TIMESTAMP)
  WITH (topic='in_top_n_updating', timestamp='ts');

CREATE STREAM out_top_n_updating WITH (topic='out_top_n_updating') AS
SELECT cat, item, total, rn FROM (
  SELECT cat, item, total, ROW_NUMBER() OVER (PARTITION BY cat ORDER BY total DESC) AS rn
  FROM (SELECT cat, item, SUM(qty) AS total FROM tn_sales GROUP BY cat, item) AS t
) AS r
WHERE rn <= 2;
