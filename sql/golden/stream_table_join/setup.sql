-- Orders joined with the latest row of their customer. Customers given before the first order
-- are loaded when the query starts; later changes (an update, a new customer, a tombstone)
-- apply to the orders after them.
CREATE TABLE stj_customers (id BIGINT PRIMARY KEY, name VARCHAR, tier VARCHAR)
  WITH (topic='in_stj_customers');

CREATE STREAM stj_orders (order_id BIGINT, customer_id BIGINT, amount DOUBLE, ts TIMESTAMP)
  WITH (topic='in_stj_orders', timestamp='ts');

CREATE STREAM out_stream_table_join WITH (topic='out_stream_table_join') AS
SELECT o.order_id, o.customer_id, c.name, c.tier, o.amount
FROM stj_orders o JOIN stj_customers c ON o.customer_id = c.id;
