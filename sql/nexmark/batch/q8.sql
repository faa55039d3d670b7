-- Batch baseline of q8 (monitor new users): people and auctions joined on seller and on the
-- 10-second tumbling window (date_bin) of each, one row per person-auction pair, as the
-- streaming q8 (a window join) computes it.
SELECT P.id, P.name, P.starttime
FROM (SELECT id, name, date_bin(INTERVAL '10 seconds', date_time) AS starttime FROM person) AS P
JOIN (SELECT seller, date_bin(INTERVAL '10 seconds', date_time) AS starttime FROM auction) AS A
  ON P.id = A.seller AND P.starttime = A.starttime
