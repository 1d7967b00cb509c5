-- payroute journal, version 3 (SQLite; ../postgres/0003_order_index.sql is
-- the part both backends share). Why: BENCHMARKS.md, "Session 10".

-- Payments just opened, and their moves, before they join `payments`.
--
-- A payment's open and its close are two commits a few milliseconds apart.
-- Written to `payments` directly, each commit touched the row and up to
-- five index entries on pages all over the file (the by-order index is
-- keyed by the merchant's order id: a random page per payment), and the
-- close then rewrote the row and removed its sweeper entry. Here the open
-- is one row appended at the end of a small table, the close rewrites that
-- row where it is, and the writer moves the staged rows into `payments`
-- in one statement every 100 ms (or 2,048 rows): a payment that closed
-- meanwhile enters `payments` once, in its final state, with no sweeper
-- entry to add and remove. Every row here is committed like any other:
-- staging changes where a row is, never whether it is durable. Rows left
-- here by a crash are moved when the journal next opens.
--
-- Same columns and checks as `payments`; `seq` keeps the order they came in.
CREATE TABLE payments_staged (
    seq               INTEGER PRIMARY KEY,
    trade_no          TEXT    NOT NULL UNIQUE,
    merchant_id       TEXT    NOT NULL,
    order_id          TEXT    NOT NULL,
    amount            INTEGER NOT NULL CHECK (amount >= 0),
    currency          TEXT    NOT NULL,
    pay_type          TEXT,
    protocol          TEXT    NOT NULL CHECK (protocol IN ('http', 'epay')),
    channel_id        TEXT,
    channel_trade_no  TEXT,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'paid', 'declined', 'failed', 'closed', 'reversed', 'refunded')),
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

-- Every payment, staged or not: what to read with your own SQL while
-- payroute runs (payroute's own reads first move the staged rows).
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

-- One index by order id instead of two (by channel and by merchant): a
-- notification is matched on (channel, order) and a merchant's query on
-- (merchant, order), and an order id names one payment or a handful, so
-- the rest of the key only filtered what the order id had already found,
-- at the price of a second random page written per payment.
DROP INDEX payments_channel_order;
DROP INDEX payments_merchant_order;
CREATE INDEX payments_order ON payments (order_id);
