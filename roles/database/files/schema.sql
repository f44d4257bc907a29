-- The slice of the call center's database that the lab exercises: fund accounts read by the IVR's
-- self-service query through KCBP.
CREATE TABLE IF NOT EXISTS fund_account (
    account  text PRIMARY KEY,
    balance  numeric(14, 2) NOT NULL,
    updated  timestamptz NOT NULL DEFAULT now()
);
