-- payroute journal, version 4 (SQLite only): the stage's checks, written
-- so that checking a row builds nothing. Why: BENCHMARKS.md, "Session 11".
--
-- SQLite evaluates `x IN ('a', 'b', 'c', ...)` with three or more values by
-- building a temporary b-tree of the list, once per statement it runs: for
-- the stage, once per payment opened and once per payment closed (the close
-- sets `state`, so its check runs). Measured, that was 4 µs of the writer's
-- time per statement, and a single-row insert cost 2.4 times one without
-- the check. The same constraint spelled as `=` tests joined by `OR` costs
-- what no check costs. Rows and their meaning are unchanged: the table is
-- rebuilt with the new check text and its rows copied in order.
--
-- `payments` and the other tables keep their `IN` checks: they are written
-- once per projection of many rows, or per notification and delivery, and
-- rebuilding them would rewrite a journal of any size at start.
DROP VIEW payments_all;
ALTER TABLE payments_staged RENAME TO payments_staged_v3;

CREATE TABLE payments_staged (
    seq               INTEGER PRIMARY KEY,
    trade_no          TEXT    NOT NULL UNIQUE,
    merchant_id       TEXT    NOT NULL,
    order_id          TEXT    NOT NULL,
    amount            INTEGER NOT NULL CHECK (amount >= 0),
    currency          TEXT    NOT NULL,
    pay_type          TEXT,
    protocol          TEXT    NOT NULL CHECK (protocol = 'http' OR protocol = 'epay'),
    channel_id        TEXT,
    channel_trade_no  TEXT,
    state             TEXT    NOT NULL CHECK (state = 'pending' OR state = 'paid' OR state = 'declined'
                                              OR state = 'failed' OR state = 'closed' OR state = 'reversed'
                                              OR state = 'refunded'),
    expected_fee      INTEGER NOT NULL DEFAULT 0,
    refunded_amount   INTEGER NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    refund_held       INTEGER NOT NULL DEFAULT 0 CHECK (refund_held >= 0),
    merchant_data     TEXT    NOT NULL DEFAULT '{}',
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    next_query_at_ms  INTEGER,
    query_count       INTEGER NOT NULL DEFAULT 0,
    paid_at_ms        INTEGER,
    CHECK (refunded_amount + refund_held <= amount)
) STRICT;

INSERT INTO payments_staged SELECT * FROM payments_staged_v3 ORDER BY seq;
DROP TABLE payments_staged_v3;

-- As in version 3.
CREATE VIEW payments_all AS
    SELECT trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, channel_id,
           channel_trade_no, state, expected_fee, refunded_amount, refund_held, merchant_data,
           created_at_ms, updated_at_ms, next_query_at_ms, query_count, paid_at_ms
    FROM payments
    UNION ALL
    SELECT trade_no, merchant_id, order_id, amount, currency, pay_type, protocol, channel_id,
           channel_trade_no, state, expected_fee, refunded_amount, refund_held, merchant_data,
           created_at_ms, updated_at_ms, next_query_at_ms, query_count, paid_at_ms
    FROM payments_staged;
