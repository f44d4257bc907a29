@lab
Feature: The TA import program moves to Shenzhen; Shanghai's stays as the fallback (plan 2.2.2, 3.3)
  The migration's second batch. The TA import job reads the fund registrar's daily files from the file
  server in Shanghai (ta-files) and bulk-writes them into the call center's database, every night by
  cron, outside agent hours. The plan's playbook (playbooks/migration/02_ta_import.yml, runbook step
  mig_ta_import) copies the program from Shanghai's TA server (sh-ta) to Shenzhen's (sz-ta), stops
  Shanghai's scheduled task and creates Shenzhen's. Until the app/DB batch the database is in Shanghai,
  so Shenzhen's runs read the files and write the rows across the WAN: the plan's cross-site bulk test.
  The registrar's files are generated on ta-files (deterministic, with a header and a trailer carrying
  the record count and checksum); what the database holds is counted against what was sent.

  @MIG-TA1 @migration
  Scenario: The import program copied to Shenzhen, Shanghai's scheduled task stopped, Shenzhen's created
    Plan 2.2.2: "copy the import program from the Shanghai server to the Shenzhen server; stop the
    Shanghai scheduled task; create the scheduled task on the Shenzhen server; follow the task's runs
    after the migration."
    Given the TA import task is scheduled on sh-ta only and sz-ta has no import program
    When the operators run the TA import batch
    Then the runbook ledger records mig_ta_import
    And sz-ta holds the import program with the same bytes as sh-ta
    And the scheduled task of sh-ta is stopped while cron keeps running there
    And the scheduled task of sz-ta runs the import outside agent hours
    When the operators run the TA import batch again
    Then nothing changes

  @MIG-TA1 @MIG-TA2 @migration
  Scenario: More than 100 MB of TA text imported across the sites by Shenzhen's task, measured, while calls go on
    Plan 2.2.2: "it reads many remote files and bulk-writes the database (over 100 MB of text imported),
    far heavier than daily agent traffic, and runs outside agent hours; so besides moving the function,
    it serves as the test of bulk file access and database read/write between Shenzhen and Shanghai."
    Given the TA import batch has run
    And the registrar publishes a batch of 8 TA files holding more than 100 MB of text
    When the scheduled task of sz-ta runs the way cron starts it, while basic call tests run
    Then every record the registrar sent is in the database, with the same record count and checksum
    And the run read the files and wrote the records across the WAN, measured in MB/s per phase
    And the run fits in the night between its start and the agents' first shift
    And the basic call tests kept passing while the import ran

  @MIG-TA1 @migration
  Scenario: A corrupt TA file stops the import with the file and the record named, and nothing of its batch written
    Plan 2.2.2: "it reads many remote files and bulk-writes the database": a file spoiled on its way
    must not leave half a batch in the database; the import names what is wrong and, once the registrar
    sends the file again, imports the whole batch.
    Given the TA import batch has run
    And the registrar publishes a batch of 3 TA files whose file 2 has a malformed amount on line 40
    When the scheduled task of sz-ta runs the way cron starts it
    Then the import failed naming file 2 of the batch and line 40
    And nothing of the batch is in the database
    When the registrar sends the batch again, intact
    And the scheduled task of sz-ta runs the way cron starts it
    Then every record the registrar sent is in the database, with the same record count and checksum

  @POST-TA @post_migration
  Scenario: Shenzhen's TA server fails: Shanghai's import task, started by hand, completes the import
    Plan 3.3: "TA import: low frequency, low real-time needs, easy to observe; faults are fixed with the
    vendor in Shenzhen. On a system-level fault (hardware, OS), adjust and start the Shanghai server's
    import task by hand to complete the import."
    Given the steady state: the scheduled task of sz-ta imports the registrar's batch of the night
    And the registrar publishes a batch of 3 TA files
    When the nemesis powers off sz-ta
    Then the scheduled task of sz-ta cannot run
    When the operators run dr/ta_import_shanghai.yml
    Then every record the registrar sent is in the database, with the same record count and checksum
    And sh-ta imported the batch and its scheduled task stays stopped
    And after the rollback the scheduled task of sz-ta imports the registrar's next batch
