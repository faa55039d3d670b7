-- The largest order of each minute, with its details (the shape of Nexmark q7): orders joined
-- with the largest amount of their window. The orders wait (for the join's bound, one
-- minute) until their window's result comes out as it closes.
CREATE STREAM lp_orders (id BIGINT, amount BIGINT, ts TIMESTAMP)
  WITH (topic='in_largest_per_window', timestamp='ts');

CREATE STREAM out_largest_per_window WITH (topic='out_largest_per_window') AS
SELECT o.id, o.amount, o.ts
FROM lp_orders AS o
JOIN (
    SELECT MAX(amount) AS top, window_end
    FROM TUMBLE(TABLE lp_orders, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
    GROUP BY window_start, window_end
) AS w
ON o.amount = w.top
WHERE o.ts >= w.window_end - INTERVAL '1' MINUTE AND o.ts < w.window_end;
