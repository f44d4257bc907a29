@lab
Feature: The three E1 lines and the boards they are cabled to (plan 1.1)
  The carrier's three E1 30B+D lines reach the boards through the PBX. What the boards are and where
  they sit is read from the running lab (each board's own stats), not from the inventory.

  @LINE-B1 @baseline
  Scenario: Baseline lines: 60 channels inbound-only, 30 outbound-only
    Plan 1.1, current environment: "three China Telecom E1 30B+D lines, 90 channels in all ...
    The vendor's configuration restricts 30 channels to outbound only and 60 to inbound only."
    Given the call center in its baseline layout
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
    Given the call center in its baseline layout
    Then IPC "sh-ipc-old" runs 2 voice boards with 120 channels of which 90 are cabled
    And IPC "sh-ipc-old" runs 1 fax board with 4 ports
    And IPC "sh-ipc-new" runs no board

  @LINE-T1 @target
  Scenario: Target lines: no direction restriction, 90 concurrent outbound calls succeed
    Plan 1.1, target environment: "change the configuration so there is no inbound/outbound
    restriction: all 90 channels can carry inbound and outbound calls."
    Given the call center in its target layout
    When the IPCs dial 90 outbound calls at once
    Then the carrier answers 90 outbound calls
    And 0 outbound calls find no outbound channel
    And the boards held 90 outbound channels at the peak
    When the carrier offers 91 IVR calls at once
    Then 90 IVR calls are answered and held together

  @LINE-T2 @target
  Scenario: Target: a 30-channel tie trunk on the PBX carries the agent legs
    Plan 1.1, target environment: "Add one 30-channel internal trunk (tie line) into the PBX to
    add traffic capacity for calls transferred to agents."
    Given the call center in its target layout
    Then the PBX has a tie trunk of 30 channels
    When the carrier offers 10 agent calls at once
    Then 10 agent calls are answered and held together
    And the tie trunk carried 10 agent legs

  @HW-T1 @target
  Scenario: Target hardware: one 60-channel board moved to the new IPC with its E1 link, a new fax board there
    Plan 1.1, target environment: "move one 60-channel voice board from the current IPC to the new
    IPC, keeping that board's link to the PBX's E1 card. Add one 4-port fax board for the new IPC."
    Given the call center in its target layout
    Then IPC "sh-ipc-new" runs 1 voice boards with 60 channels of which 60 are cabled
    And IPC "sh-ipc-new" runs 1 fax board with 4 ports
    And IPC "sh-ipc-old" runs 1 voice boards with 60 channels of which 30 are cabled
    And IPC "sh-ipc-old" runs 1 fax board with 4 ports
    And the PBX trunk of board0 now reaches sh-ipc-new with its 60 channels
