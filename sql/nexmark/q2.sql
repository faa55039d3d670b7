-- Nexmark q2, selection: the bids on a set of auctions, here every auction whose id is a
-- multiple of 123 (Flink's variant of the spec's fixed list of ids).
SELECT auction, price
FROM bid
WHERE auction % 123 = 0
