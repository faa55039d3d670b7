-- Batch baseline of q8 (monitor new users): people and sellers per 10-second tumbling
-- window (date_bin), joined on id and window.
SELECT P.id, P.name, P.starttime
FROM (
    SELECT id, name, date_bin(INTERVAL '10 seconds', date_time) AS starttime
    FROM person
    GROUP BY id, name, date_bin(INTERVAL '10 seconds', date_time)
) AS P
JOIN (
    SELECT seller, date_bin(INTERVAL '10 seconds', date_time) AS starttime
    FROM auction
    GROUP BY seller, date_bin(INTERVAL '10 seconds', date_time)
) AS A
ON P.id = A.seller AND P.starttime = A.starttime
