-- payroute journal, version 3 (PostgreSQL; twin: ../sqlite/0003_staging.sql).
--
-- One index by order id instead of two (by channel and by merchant): a
-- notification is matched on (channel, order) and a merchant's query on
-- (merchant, order), and an order id names one payment or a handful, so
-- the rest of the key only filtered what the order id had already found,
-- at the price of a second index entry written per payment.
--
-- SQLite's version 3 also adds `payments_staged` (payments just opened,
-- moved into `payments` every 100 ms) and the view `payments_all`. A fleet
-- on PostgreSQL does not stage: instances share payments, and a move must
-- be a compare-and-set on the one row every instance sees. The view is
-- created here too, so a query written for one backend runs on the other.
DROP INDEX payments_channel_order;
DROP INDEX payments_merchant_order;
CREATE INDEX payments_order ON payments (order_id);
CREATE VIEW payments_all AS
    SELECT trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, channel_id,
           channel_trade_no, state, expected_fee, refunded_amount, refund_held, merchant_data,
           created_at_ms, updated_at_ms, next_query_at_ms, query_count, paid_at_ms
    FROM payments;
