-- The TA import job's tables in the call center's database (idempotent DDL, applied by roles/ta_import).
-- ta_batch: one row per imported batch, written in the same transaction as the batch's records, so a
-- batch is either wholly there (with its row) or not at all, and never imported twice.
CREATE TABLE IF NOT EXISTS ta_batch (
    batch     text PRIMARY KEY,
    files     integer NOT NULL,
    rows      bigint NOT NULL,
    bytes     bigint NOT NULL,
    checksum  numeric NOT NULL,
    host      text NOT NULL,
    imported  timestamptz NOT NULL DEFAULT now()
);
-- ta_confirm: the registrar's confirmation records (no index: a bulk load target).
CREATE TABLE IF NOT EXISTS ta_confirm (
    batch       text NOT NULL,
    file        text NOT NULL,
    line_no     integer NOT NULL,
    confirm_no  text NOT NULL,
    account     text NOT NULL,
    fund_code   text NOT NULL,
    business    text NOT NULL,
    trade_date  date NOT NULL,
    amount      numeric(16, 2) NOT NULL,
    shares      numeric(16, 2) NOT NULL,
    nav         numeric(8, 4) NOT NULL,
    fee         numeric(12, 2) NOT NULL,
    status      text NOT NULL,
    memo        text NOT NULL
);
