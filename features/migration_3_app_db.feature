@lab @migration
Feature: Application server and database: the migration test, the migration, DR afterwards (plan 2.2.3, 2.2.4, 3.5, 3.6)
  The plan's own playbooks (playbooks/migration/03_app_db_test.yml, 04_app_db_migration.yml,
  playbooks/dr/) run against the lab. The databases are PostgreSQL, DDS is their logical replication
  behind the vendor tool's start/stop/config surface, and the agents' application servers record
  work orders on the database their own configuration names. Agents write through the login
  entries while the procedures run; the checks count the rows they were promised.

  @MIG-0
  Scenario: The final app/DB migration refuses to run before the migration test has passed
    Plan 1.2, principles: "Test enough: before the final migration, run at least one business
    simulation in the real post-migration environment." Strategy: "migrate in several batches
    ordered by system importance: ... 3. application server and database: test; 4. application
    server and database: migration".
    Given the call center in its target layout
    And the ledger records the migration batches before the application server and database
    When the operators run the final app and database migration
    Then the step is refused because mig_app_db_test is missing
    And the runbook ledger does not record mig_app_db
    And the data tier is untouched: the IPCs and the Shanghai application server on sh-db, DDS from sh-db to sz-db

  @MIG-AD1
  Scenario: Migration test: the Shenzhen application server on the DDS destination, basic calls pass
    Plan 2.2.3: "Before migrating, test independently to validate and refine the plan ...: build the
    application server in Shenzhen, using as database the current DDS destination; test as in the
    Saturday-afternoon step above."
    Given the call center in its target layout
    When the operators run the app and database migration test
    Then the runbook ledger records mig_app_db_test
    And the Shenzhen test of mig_app_db_test recorded basic calls whose IVR query read sz-db through KCBP
    And the Shenzhen test of mig_app_db_test recorded an agent's login and work order on the Shenzhen application server over sz-db
    And the data tier is untouched: the IPCs and the Shanghai application server on sh-db, DDS from sh-db to sz-db
    When the operators run the app and database migration test again
    Then nothing changes

  @MIG-AD2
  Scenario: Migration: the eight steps in order, no committed row lost, DDS reversed, IPCs on Shenzhen
    Plan 2.2.4: "1. stop the DDS source and destination services; cold backup of the database;
    2. stop the application server in Shanghai; 3. start the application server in Shenzhen;
    4. redeploy DDS source and destination (Shenzhen = source, Shanghai = destination); 5. back up
    and change the configuration files of the IPCs' database-connection service to point to the
    Shenzhen database server; 6. start the Shenzhen database server; 7. start DDS; 8. run basic
    inbound, outbound and agent-answer tests."
    Given the call center in its target layout
    And agents recording work orders through the Shanghai login entry, falling back to Shenzhen's
    When the operators run the final app and database migration
    And the agents go on recording work orders for 5 s
    Then the runbook ledger records mig_app_db
    And the playbook ran the plan's eight steps in order
    And every work order the application acknowledged is on sz-db
    And the agents' writes resumed on sz-db through the Shenzhen application server and the downtime is measured
    And DDS runs from sz-db to sh-db and both databases hold the same rows and checksums
    And the IPCs' DB-connection config was backed up and names sz-db
    And the basic call tests recorded by mig_app_db passed
    When the operators run the final app and database migration again
    Then nothing changes

  @post_migration @POST-DB
  Scenario: The Shenzhen database fails: IPCs and application server switched to the Shanghai replica
    Plan 3.6: "DDS keeps running with changed configuration, so the Shanghai database is a real-time
    backup. If the Shenzhen database fails, changing the configuration files of the IPCs and the
    application server switches the data source to the Shanghai backup quickly."
    Given the data tier's steady state holds: sz-db primary, DDS keeps sh-db equal, basic calls pass
    And agents recording work orders through the Shenzhen login entry
    When the nemesis stops the database server on sz-db
    And the operators run dr/db_to_shanghai.yml
    And the agents go on recording work orders for 3 s
    Then every work order the application acknowledged is on sh-db
    And the IPCs and the Shenzhen application server use sh-db
    And the basic call tests pass on sh-db
    And after the data tier's rollback every acknowledged work order is on both databases and the steady state holds again

  @post_migration @POST-APP
  Scenario: The Shanghai application server restarted serves; agents reach either site through its own entry
    Plan 3.5: "the current (Shanghai) environment is kept; in an emergency it is restarted and serves
    again; agents choose the Shenzhen or the Shanghai environment by using a different login entry."
    Given the data tier's steady state holds: sz-db primary, DDS keeps sh-db equal, the Shenzhen application server alone serves
    When the nemesis stops the Shenzhen application server
    And the operators run dr/app_server_shanghai.yml
    Then an agent logs in through the Shanghai login entry and records a work order that lands on sz-db
    When the Shenzhen application server is started again
    Then agents log in through each site's login entry and both answer
    And after the data tier's rollback the steady state holds again
