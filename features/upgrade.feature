@lab @upgrade
Feature: The upgrade weekend, step by step (plan 2.1)
  The plan's own playbooks (playbooks/upgrade/) run against the lab in the plan's order. Each step
  is recorded in the runbook ledger on the lab, refuses to run before the steps the plan puts
  before it, and changes nothing when run a second time.

  @UPG-1
  Scenario: Nothing starts without the recorded approval of the IT and the business department
    Plan 2.1, preparation: "the plan must be confirmed by the IT department and the business
    department before it is carried out."
    Given the call center in its baseline layout
    When the operators run the announcement step
    Then the step is refused because approval is missing
    When the operators record the approval with only the IT department's sign-off
    Then the step is refused because the business department's sign-off is missing
    And the runbook ledger does not record approval
    When the operators record the approval of the IT and the business department
    Then the runbook ledger records approval by both departments

  @UPG-2
  Scenario: The upgrade notice is on the website and every caller hears it
    Plan 1.1, preparation: "publish an upgrade notice in advance on the website and as an IVR
    voice announcement."
    Given the call center in its baseline layout
    When the operators run the announcement step
    Then the runbook ledger records announcement
    And the website's home page shows the upgrade notice
    When the carrier offers 3 IVR calls at once
    Then 3 IVR calls are answered and held together
    And the IVR played the upgrade-notice prompt first to 3 callers

  @UPG-3
  Scenario: Friday: conflict check, new IPC installed, both IPCs' software backed up, copied and restorable
    Plan 2.1, Friday: "check the software and hardware environments for conflicts with this plan;
    install the new IPC's OS; back up and copy the software of primary and secondary."
    Given the call center in its baseline layout
    When the operators run the saturday_am step
    Then the step is refused because friday is missing
    When the operators run the friday step
    Then the runbook ledger records friday
    And the new IPC restored every file of the old IPC's backup intact
    When the operators run the friday step again
    Then nothing changes

  @UPG-4
  Scenario: Saturday morning: board moved, new IPC primary, every channel dial-tested, services per DR-2
    Plan 2.1, Saturday morning: "stop the system; move the board (the new IPC has better hardware
    and becomes the primary; the current IPC becomes the secondary); install the driver on the
    primary; dial-test the lines from primary and secondary; start the services of primary and
    secondary as planned; run basic inbound, outbound and agent-answer tests."
    When the operators run the saturday_am step
    Then the runbook ledger records saturday_am
    And the dial test answered 60 calls on board0 in sh-ipc-new and 30 calls on board1 in sh-ipc-old
    And the services of both IPCs run as the DR principle says
    And the basic call tests recorded by the step passed
    When the operators run the saturday_am step again
    Then nothing changes

  @UPG-5
  Scenario: Saturday afternoon: database and application server switched to the Shenzhen test environment
    Plan 2.1, Saturday afternoon: "switch database and application server to the Shenzhen test
    environment, to test and validate the later migration; run basic inbound, outbound and
    agent-answer tests; monitor every service."
    When the operators run the saturday_pm step
    Then the runbook ledger records saturday_pm
    And the Shenzhen test of saturday_pm recorded basic calls whose IVR query read sz-db through KCBP
    And the Shenzhen test of saturday_pm recorded an agent's login and work order on the Shenzhen application server over sz-db
    And the Shenzhen test of saturday_pm recorded every service monitored and no failed calls
    And the IPCs' DB-connection config names sh-db again, the replaced one kept as /var/backups/ccdrill/dbconn.ini.before-saturday_pm
    When the operators run the saturday_pm step again
    Then nothing changes

  @UPG-6
  Scenario: Sunday morning: line and software faults drilled on primary and secondary, basic calls after each
    Plan 2.1, Sunday morning: "disaster drill: simulate line faults and software faults on primary
    and on secondary; switch over as this plan says; run basic inbound, outbound and agent-answer tests."
    When the operators run the sunday_drill step
    Then the runbook ledger records sunday_drill
    And the drill recorded dr3, dr4 and dr5 each with its response, passing basic calls and the failback
    And the services of both IPCs run as the DR principle says

  @UPG-7
  Scenario: Monday: every service up and no failed calls, the notice taken down
    Plan 2.1, monitoring: "on Monday, on-site observation in Shanghai, so the upgrade does not
    affect daily business and any fault that day is fixed at once."
    When the operators run the monday step
    Then the runbook ledger records monday
    And the monitoring check recorded every service up and no failed calls
    And the website's home page shows no upgrade notice
