-- Batch baseline of q4 (average price per category) in plain DataFusion SQL.
SELECT Q.category, AVG(Q.final) AS avg_price
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction AS A
    JOIN bid AS B ON A.id = B.auction
    WHERE B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) AS Q
GROUP BY Q.category
