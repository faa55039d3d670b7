-- Batch baseline of q2 (selection) in plain DataFusion SQL.
SELECT auction, price
FROM bid
WHERE auction % 123 = 0
