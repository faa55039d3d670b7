-- The busiest users of each minute, ties all reported (the shape of Nexmark q5): a windowed
-- count, the largest count per window over it, and the two joined on the window. A window's
-- rows are all emitted when it closes, so the outer aggregate and the join see it whole.
CREATE STREAM tp_clicks (user_id VARCHAR, url VARCHAR, ts TIMESTAMP)
  WITH (topic='in_top_per_window', timestamp='ts');

CREATE STREAM out_top_per_window WITH (topic='out_top_per_window') AS
SELECT c.user_id, c.n, c.window_end
FROM (
    SELECT user_id, COUNT(*) AS n, window_start, window_end
    FROM TUMBLE(TABLE tp_clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
    GROUP BY user_id, window_start, window_end
) AS c
JOIN (
    SELECT MAX(x.n) AS maxn, x.window_start AS ws, x.window_end AS we
    FROM (
        SELECT user_id, COUNT(*) AS n, window_start, window_end
        FROM TUMBLE(TABLE tp_clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
        GROUP BY user_id, window_start, window_end
    ) AS x
    GROUP BY x.window_start, x.window_end
) AS m
ON c.window_start = m.ws AND c.window_end = m.we AND c.n = m.maxn;
