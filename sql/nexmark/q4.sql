-- Nexmark q4, average price per category: the winning bid of each auction is its highest
-- bid made while it was open; the query keeps the average winning price of each category.
SELECT Q.category, AVG(Q.final) AS avg_price
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction AS A
    JOIN bid AS B ON A.id = B.auction
    WHERE B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) AS Q
GROUP BY Q.category
