-- The slice of the call center's database that the lab exercises: fund accounts read by the IVR's
-- self-service query through KCBP, and the work orders the agents record through the application
-- server. Ids come from the clients (no sequence: DDS, like logical replication, copies rows, not
-- sequences, so a site taking over never reissues an id).
CREATE TABLE IF NOT EXISTS fund_account (
    account  text PRIMARY KEY,
    balance  numeric(14, 2) NOT NULL,
    updated  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS work_order (
    id       text PRIMARY KEY,
    agent    text NOT NULL,
    note     text NOT NULL,
    site     text NOT NULL,
    created  timestamptz NOT NULL DEFAULT now()
);
