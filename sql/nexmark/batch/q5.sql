-- Batch baseline of q5 (hot items): each bid belongs to the five 10-second windows starting
-- 0, 2, 4, 6 and 8 seconds before the start of its 2-second slot.
WITH hops AS (
    SELECT B.auction, date_bin(INTERVAL '2 seconds', B.date_time) - H.back AS window_start
    FROM bid AS B
    CROSS JOIN (VALUES (INTERVAL '0 seconds'), (INTERVAL '2 seconds'), (INTERVAL '4 seconds'),
        (INTERVAL '6 seconds'), (INTERVAL '8 seconds')) AS H(back)
),
counts AS (
    SELECT auction, window_start, COUNT(*) AS num
    FROM hops
    GROUP BY auction, window_start
),
maxes AS (
    SELECT window_start, MAX(num) AS maxn
    FROM counts
    GROUP BY window_start
)
SELECT C.auction, C.num
FROM counts AS C
JOIN maxes AS M ON C.window_start = M.window_start AND C.num >= M.maxn
