-- Batch baseline of q1 (currency conversion) in plain DataFusion SQL.
SELECT auction, bidder, 0.908 * price AS price, date_time, extra
FROM bid
