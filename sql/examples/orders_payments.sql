-- Orders joined with their payments: a payment counts if it arrives within 10 minutes of its
-- order (a stream-stream interval join), and every order is enriched with its customer (a
-- stream-table join against the latest row per customer id).
--
--   strom sql -f sql/examples/orders_payments.sql
--   echo '{"id":1,"name":"Ada","country":"UK"}'                       | strom produce customers
--   echo '{"order_id":7,"customer_id":1,"amount":25.5,"ts":"2026-01-01T10:00:00Z"}' | strom produce orders
--   echo '{"order_id":7,"paid":25.5,"ts":"2026-01-01T10:03:00Z"}'     | strom produce payments

CREATE TABLE IF NOT EXISTS customers (id BIGINT PRIMARY KEY, name VARCHAR, country VARCHAR)
  WITH (topic = 'customers', format = 'json', partitions = 1);

CREATE STREAM IF NOT EXISTS orders (order_id BIGINT, customer_id BIGINT, amount DOUBLE, ts TIMESTAMP)
  WITH (topic = 'orders', format = 'json', timestamp = 'ts',
        watermark = 'ts - INTERVAL ''1'' SECOND', partitions = 1);

CREATE STREAM IF NOT EXISTS payments (order_id BIGINT, paid DOUBLE, ts TIMESTAMP)
  WITH (topic = 'payments', format = 'json', timestamp = 'ts',
        watermark = 'ts - INTERVAL ''1'' SECOND', partitions = 1);

CREATE STREAM paid_orders WITH (topic = 'paid_orders') AS
  SELECT o.order_id, o.amount, p.paid, o.ts AS ordered_at, p.ts AS paid_at
  FROM orders o JOIN payments p
    ON o.order_id = p.order_id
   AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' MINUTE;

CREATE STREAM orders_enriched WITH (topic = 'orders_enriched') AS
  SELECT o.order_id, o.amount, c.name, c.country, o.ts
  FROM orders o JOIN customers c ON o.customer_id = c.id;

SHOW QUERIES;
