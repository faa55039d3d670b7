-- An aggregate over an updating aggregate (the shape of Nexmark q4): the average, per
-- category, of each item's highest price. When an item's maximum changes, its old maximum is
-- taken back out of the average and the new one put in.
-- golden: ordered
CREATE STREAM am_bids (item VARCHAR, cat VARCHAR, price BIGINT, ts TIMESTAMP)
  WITH (topic='in_avg_of_max', timestamp='ts');

CREATE STREAM out_avg_of_max WITH (topic='out_avg_of_max') AS
SELECT m.cat, AVG(m.top) AS avg_top
FROM (SELECT item, cat, MAX(price) AS top FROM am_bids GROUP BY item, cat) AS m
GROUP BY m.cat;
