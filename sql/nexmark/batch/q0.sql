-- Batch baseline of q0 (pass-through) in plain DataFusion SQL.
SELECT auction, bidder, price, date_time, extra
FROM bid
