-- A stateless query: filter, compute, rename. Rows that do not pass, and records that are not
-- JSON, produce nothing.
CREATE STREAM fp_orders (id BIGINT, user_id VARCHAR, amount DOUBLE, status VARCHAR, ts TIMESTAMP)
  WITH (topic='in_filter_project', timestamp='ts');

CREATE STREAM out_filter_project WITH (topic='out_filter_project') AS
SELECT id, upper(user_id) AS user_name, amount * 2 AS double_amount, ts
FROM fp_orders
WHERE status = 'paid' AND amount >= 10;
