-- A filter between an updating aggregate and a window function over it: a row the filter
-- now drops leaves the ranking (the others move up) and is deleted from the output.
-- golden: ordered
CREATE STREAM rp_moves (item VARCHAR, qty BIGINT, ts TIMESTAMP)
  WITH (topic='in_ranked_positive', timestamp='ts');

CREATE STREAM out_ranked_positive WITH (topic='out_ranked_positive') AS
SELECT item, total, RANK() OVER (ORDER BY total DESC) AS place
FROM (SELECT item, SUM(qty) AS total FROM rp_moves GROUP BY item) AS t
WHERE total > 0;
