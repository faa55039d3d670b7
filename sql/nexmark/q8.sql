-- Nexmark q8, monitor new users: the people who opened an auction in the same 10-second
-- tumbling window in which they registered, as a window join of person and auction.
-- (Flink's q8 first deduplicates each side with a GROUP BY; Strom joins the windowed streams
-- directly, one row per person-auction pair, as Flink's newer window-join form does. A join
-- over aggregates is not supported in a continuous query.)
SELECT P.id, P.name, P.window_start AS starttime
FROM TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND) AS P
JOIN TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND) AS A
  ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end
