-- An aggregate without a window is an upsert changelog: every input record updates its
-- user's row, and the new row is written at once, keyed by user_id.
-- golden: ordered
CREATE STREAM ec_orders (user_id VARCHAR, amount BIGINT, ts TIMESTAMP)
  WITH (topic='in_emit_changes', timestamp='ts');

CREATE STREAM out_emit_changes WITH (topic='out_emit_changes') AS
SELECT user_id, COUNT(*) AS orders, SUM(amount) AS total
FROM ec_orders
GROUP BY user_id
EMIT CHANGES;
