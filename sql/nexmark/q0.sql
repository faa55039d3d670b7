-- Nexmark q0, pass-through: every bid, unchanged. Measures the cost of reading, decoding,
-- encoding and writing records with no work in between.
SELECT auction, bidder, price, date_time, extra
FROM bid
