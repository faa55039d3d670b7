-- Nexmark's three event streams, and the people as a table, over the topics that
-- `strom bench nexmark` fills (JSON values; date_time and expires are epoch milliseconds).
-- Event time is date_time; the watermark trails the newest event by 4 seconds.

CREATE STREAM person (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR) WITH (topic='nexmark-person', format='json', timestamp='date_time', watermark='date_time - INTERVAL ''4'' SECOND', partitions=1);

CREATE STREAM auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR) WITH (topic='nexmark-auction', format='json', timestamp='date_time', watermark='date_time - INTERVAL ''4'' SECOND', partitions=1);

CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR) WITH (topic='nexmark-bid', format='json', timestamp='date_time', watermark='date_time - INTERVAL ''4'' SECOND', partitions=1);

-- The latest row per person id (ids are never reused, so every person), for joins (q3).
CREATE TABLE person_t (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR) WITH (topic='nexmark-person', format='json', key='id', timestamp='date_time', partitions=1);
