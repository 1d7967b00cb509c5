-- payroute journal, version 1 (SQLite). The PostgreSQL twin is
-- ../postgres/0001_init.sql: same tables, columns and meanings; only types
-- and identity columns differ. Times are Unix milliseconds, amounts minor
-- units (fen, cents). Tables are STRICT: a value of the wrong type is an
-- error, not a silent conversion. No foreign keys: history rows are written behind the
-- payment they belong to, and nothing here is ever deleted by payroute.

-- One row per payment: the money record. `state` moves only forward (the
-- rules are in src/journal/state.rs and every move is a compare-and-set).
CREATE TABLE payments (
    trade_no          TEXT    NOT NULL PRIMARY KEY,
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
    -- Refunds the channel accepted, and refunds sent but not answered yet:
    -- together never above `amount` (the 422 amount_limit_exceeded check).
    refunded_amount   INTEGER NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    refund_held       INTEGER NOT NULL DEFAULT 0 CHECK (refund_held >= 0),
    -- JSON object, protocol-specific (epay notify_url, return_url, name, money, param; JSON notify target).
    merchant_data     TEXT    NOT NULL DEFAULT '{}',
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    -- The sweeper's schedule: set while pending, NULL once the state is final.
    next_query_at_ms  INTEGER,
    query_count       INTEGER NOT NULL DEFAULT 0,
    CHECK (refunded_amount + refund_held <= amount)
) STRICT;
CREATE INDEX payments_channel_order ON payments (channel_id, order_id);
CREATE INDEX payments_merchant_order ON payments (merchant_id, order_id);
CREATE INDEX payments_due ON payments (next_query_at_ms) WHERE next_query_at_ms IS NOT NULL;
CREATE INDEX payments_created ON payments (created_at_ms, trade_no);

-- Every attempt at a channel (history, written behind).
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    trade_no    TEXT    NOT NULL,
    channel_id  TEXT    NOT NULL,
    result      TEXT    NOT NULL,
    latency_ms  INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL
) STRICT;
CREATE INDEX attempts_trade_no ON attempts (trade_no);

-- Every notification a channel sent. An accepted one is unique per
-- (channel, dedupe key): the second copy is a duplicate and changes nothing.
-- Rejected ones (bad signature, wrong amount, unknown payment) are history
-- and may repeat a key that a genuine notification later brings.
CREATE TABLE notifications_in (
    id          INTEGER PRIMARY KEY,
    channel_id  TEXT    NOT NULL,
    dedupe_key  TEXT,
    trade_no    TEXT,
    result      TEXT    NOT NULL CHECK (result IN ('accepted', 'duplicate', 'bad_signature', 'amount_mismatch', 'unknown_payment')),
    at_ms       INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX notifications_in_dedupe ON notifications_in (channel_id, dedupe_key) WHERE result = 'accepted';
CREATE INDEX notifications_in_trade_no ON notifications_in (trade_no);

-- The outbox: notifications to merchants. Inserted in the transaction that
-- moved the payment; delivered by whichever instance holds the lease.
CREATE TABLE events (
    event_id         TEXT    NOT NULL PRIMARY KEY,
    trade_no         TEXT    NOT NULL,
    merchant_id      TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    target           TEXT    NOT NULL,
    method           TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_at_ms       INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until_ms   INTEGER,
    last_error       TEXT,
    created_at_ms    INTEGER NOT NULL,
    delivered_at_ms  INTEGER
) STRICT;
CREATE INDEX events_due ON events (next_at_ms) WHERE state = 'pending';
CREATE INDEX events_state ON events (state, created_at_ms);
CREATE INDEX events_trade_no ON events (trade_no);

-- Reversals and refunds, each as the channel answered it.
CREATE TABLE adjustments (
    id          INTEGER PRIMARY KEY,
    trade_no    TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('reversal', 'refund')),
    channel_id  TEXT,
    amount      INTEGER,
    result      TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '',
    at_ms       INTEGER NOT NULL
) STRICT;
CREATE INDEX adjustments_trade_no ON adjustments (trade_no);
