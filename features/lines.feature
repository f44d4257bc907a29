@lab
Feature: The three E1 lines and the boards they are cabled to (plan 1.1)
  The carrier's three E1 30B+D lines reach the boards through the PBX. What the boards are and where
  they sit is read from the running lab (each board's own stats), not from the inventory.

  Background:
    Given the call center in its baseline layout

  @LINE-B1 @baseline
  Scenario: Baseline lines: 60 channels inbound-only, 30 outbound-only
    Plan 1.1, current environment: "three China Telecom E1 30B+D lines, 90 channels in all ...
    The vendor's configuration restricts 30 channels to outbound only and 60 to inbound only."
    When the carrier offers 61 IVR calls at once
    Then 60 IVR calls are answered and held together
    And 1 IVR call is refused with 503
    When the IPCs dial 31 outbound calls at once
    Then the carrier answers 30 outbound calls
    And 1 outbound call finds no outbound channel
    And the boards held 30 outbound channels at the peak

  @HW-B1 @baseline
  Scenario: Baseline hardware: both 60-channel boards and the fax board in the old IPC, 90 of 120 cabled
    Plan 1.1, current environment: "two Dialogic 60-channel digital voice boards and one Dialogic
    4-port fax board. The voice boards connect 90 of their 120 channels ... to the PBX's E1 card."
    Then IPC "sh-ipc-old" runs 2 voice boards with 120 channels of which 90 are cabled
    And IPC "sh-ipc-old" runs 1 fax board with 4 ports
    And IPC "sh-ipc-new" runs no board
