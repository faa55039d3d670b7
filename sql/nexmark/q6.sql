-- Nexmark q6, average selling price by seller: for each seller, the average winning price
-- (highest bid made while the auction was open) of their last 10 auctions.
SELECT Q.seller,
    AVG(Q.final) OVER (PARTITION BY Q.seller ORDER BY Q.date_time ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
FROM (
    SELECT MAX(B.price) AS final, A.seller, MAX(B.date_time) AS date_time
    FROM auction AS A
    JOIN bid AS B ON A.id = B.auction
    WHERE B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.seller
) AS Q
