-- payroute journal, version 5 (SQLite only): the stage leaves the database
-- for a log file of its own. Why: BENCHMARKS.md, "Session 13".
--
-- Versions 3 and 4 staged a payment's open and close in `payments_staged`,
-- a commit each. The stage now lives in memory and in a log beside the
-- database (`payroute.db-stage/N`, JSON lines, one `write(2)` a record),
-- and is moved into `payments` as before; no payment's answer waits for
-- SQLite any more. Rows a version 4 run left staged move into `payments`
-- here, and the view `payments_all` stays, over `payments` alone, for SQL
-- of your own that names it.

INSERT INTO payments (trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, channel_id,
                      channel_trade_no, state, expected_fee, refunded_amount, refund_held, merchant_data,
                      created_at_ms, updated_at_ms, next_query_at_ms, query_count, paid_at_ms)
    SELECT trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, channel_id,
           channel_trade_no, state, expected_fee, refunded_amount, refund_held, merchant_data,
           created_at_ms, updated_at_ms, next_query_at_ms, query_count, paid_at_ms
    FROM payments_staged ORDER BY seq
    ON CONFLICT DO NOTHING;
DROP VIEW payments_all;
DROP TABLE payments_staged;

CREATE VIEW payments_all AS
    SELECT trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, channel_id,
           channel_trade_no, state, expected_fee, refunded_amount, refund_held, merchant_data,
           created_at_ms, updated_at_ms, next_query_at_ms, query_count, paid_at_ms
    FROM payments;

-- The last log segment whose rows are in `payments`, written in the same
-- transaction as those rows: a segment a crash left on disk after its
-- projection committed is not replayed.
CREATE TABLE stage_projected (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL CHECK (through >= 0)
) STRICT;
INSERT INTO stage_projected (id, through) VALUES (1, 0);
