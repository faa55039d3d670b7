-- Batch baseline of q3 (local item suggestion): person ids are unique, so the person table
-- is the person stream itself.
SELECT P.name, P.city, P.state, A.id
FROM auction AS A
JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')
