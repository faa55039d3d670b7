-- Batch baseline of q8 (monitor new users): people and sellers per 10-second tumbling
-- window (date_bin), joined on id and window. The windows are computed in inner queries and
-- grouped by column: DataFusion 55 drops a GROUP BY on a date_bin(..) expression when its
-- result is joined, returning duplicates.
SELECT P.id, P.name, P.starttime
FROM (
    SELECT id, name, starttime
    FROM (SELECT id, name, date_bin(INTERVAL '10 seconds', date_time) AS starttime FROM person) AS W
    GROUP BY id, name, starttime
) AS P
JOIN (
    SELECT seller, starttime
    FROM (SELECT seller, date_bin(INTERVAL '10 seconds', date_time) AS starttime FROM auction) AS W
    GROUP BY seller, starttime
) AS A
ON P.id = A.seller AND P.starttime = A.starttime
