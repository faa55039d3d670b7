-- Orders joined with their payments made within 10 seconds after the order (both ends
-- included), whichever arrives first.
CREATE STREAM ij_orders (id BIGINT, user_id VARCHAR, amount DOUBLE, ts TIMESTAMP)
  WITH (topic='in_ij_orders', timestamp='ts');

CREATE STREAM ij_payments (pay_id BIGINT, order_id BIGINT, paid DOUBLE, ts TIMESTAMP)
  WITH (topic='in_ij_payments', timestamp='ts');

CREATE STREAM out_interval_join WITH (topic='out_interval_join') AS
SELECT o.id AS order_id, o.user_id, p.pay_id, p.paid, o.ts AS order_ts, p.ts AS paid_ts
FROM ij_orders o JOIN ij_payments p
  ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND;
