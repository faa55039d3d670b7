-- Batch baseline of q7 (highest bid per 10-second tumbling window), windows by date_bin.
SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
FROM bid AS B
JOIN (
    SELECT MAX(price) AS maxprice, window_start + INTERVAL '10 seconds' AS date_time
    FROM (SELECT price, date_bin(INTERVAL '10 seconds', date_time) AS window_start FROM bid) AS W
    GROUP BY window_start
) AS B1
ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10 seconds' AND B1.date_time
