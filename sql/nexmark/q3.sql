-- Nexmark q3, local item suggestion: the auctions in category 10 of sellers from Oregon, Idaho
-- or California, with the seller's name, city and state (a stream-table join on the seller).
SELECT P.name, P.city, P.state, A.id
FROM auction AS A
JOIN person_t AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')
