@lab
Feature: Basic call tests (run after every step of the upgrade weekend and the migration)
  "Basic inbound, outbound and agent-answer tests" (plan 2.1), as the harness runs them.

  @BASIC-1 @baseline
  Scenario: One IVR self-service call reading the current database, one outbound call, one agent call
    Plan 2.1: "run basic inbound, outbound and agent-answer tests". The IVR's self-service query
    must read the database that the IPC's DB-connection config names, through KCBP.
    Given the call center in its baseline layout
    Given a fund account with a fresh balance in the database the IPC's DB-connection config names
    When a caller dials the IVR and asks for that account
    Then the call is answered and the IVR read that balance from that database through KCBP
    When the IPCs dial 1 outbound call at once
    Then the carrier answers 1 outbound call
    When the carrier offers 1 agent call at once
    Then 1 agent call is answered and held together
    And the seats answered 1 agent leg
    And the boards held 2 channels at the peak
