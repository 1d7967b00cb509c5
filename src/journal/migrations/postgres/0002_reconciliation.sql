-- payroute journal, version 2 (PostgreSQL; twin: ../sqlite/0002_reconciliation.sql).
-- What reconciliation (对账) needs.

-- When the payment became paid: the time a channel dates it by on its
-- statement, so `payroute reconcile` puts it in the channel's business day
-- (a payment created at 23:59 and paid at 00:01 belongs to the next day).
-- NULL for payments never paid, and for those paid before version 2
-- (reconcile then falls back to `updated_at_ms`).
ALTER TABLE payments ADD COLUMN paid_at_ms BIGINT;

-- One row per reconciliation run that read its statement to the end: the
-- channel's effective fee (`fees_charged / fee_base`) is exported from the
-- newest row per channel as `payroute_channel_effective_fee_percent`.
CREATE TABLE reconciliations (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id        TEXT    NOT NULL,
    business_day      TEXT    NOT NULL,   -- YYYY-MM-DD in the channel's day-cut
    statement_lines   BIGINT  NOT NULL,
    matched           BIGINT  NOT NULL,
    differences       BIGINT  NOT NULL,
    -- Sum of the amounts of paid rows that state a fee, and of those fees.
    fee_base          BIGINT  NOT NULL,
    fees_charged      BIGINT  NOT NULL,
    at_ms             BIGINT  NOT NULL
);
CREATE INDEX reconciliations_channel ON reconciliations (channel_id, at_ms);
