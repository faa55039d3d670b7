-- A window function over an updating aggregate (the shape of Nexmark q6): per seller, the
-- average of the highest prices of their last two items, ordered by each item's latest bid.
-- Every item is one row of the result, keyed by the aggregate's group (item, seller); when an
-- item's row changes, it and the rows whose frames held it, or hold it now, are written again.
-- golden: ordered
CREATE STREAM ln_bids (item VARCHAR, seller VARCHAR, price BIGINT, ts TIMESTAMP)
  WITH (topic='in_last_n_average', timestamp='ts');

CREATE STREAM out_last_n_average WITH (topic='out_last_n_average') AS
SELECT q.seller, q.item,
  AVG(q.top) OVER (PARTITION BY q.seller ORDER BY q.last ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS avg_top
FROM (SELECT item, seller, MAX(price) AS top, MAX(ts) AS last FROM ln_bids GROUP BY item, seller) AS q;
