@lab
Feature: Call capacity of the IPC voice boards (plan 1.1)
  Real SIP calls from the carrier are held at the same time through the PBX; the boards answer or
  refuse. Answered and refused calls are counted by SIPp, the channels in use by the boards' own stats.
  A call transferred to an agent holds two channels on the same board (X + 2Y).

  @CAP-B1 @baseline
  Scenario: Baseline, every caller in IVR self-service: 60 at once, the 61st refused
    Plan 1.1, current environment: "all calls self-service IVR: at most 60 concurrent callers."
    Given the call center in its baseline layout
    When the carrier offers 61 IVR calls at once
    Then 60 IVR calls are answered and held together
    And 1 IVR call is refused with 503
    And the boards held 60 channels at the peak

  @CAP-B2 @baseline
  Scenario: Baseline, every caller transferred to an agent: 30 at once, the 31st refused
    Plan 1.1, current environment: "All calls transferred to agents: at most 30 concurrent
    (regardless of how many agents are logged in)."
    Given the call center in its baseline layout
    When the carrier offers 31 agent calls at once
    Then 30 agent calls are answered and held together
    And 1 agent call is refused with 503
    And the seats answered 30 agent legs
    And the boards held 60 channels at the peak

  @CAP-B3 @baseline
  Scenario: Baseline mix X + 2Y = 60: 10 agent calls and 40 IVR calls, one more IVR call refused
    Plan 1.1, current environment: "with X callers in IVR self-service and Y callers with an agent,
    capacity is X + 2Y = 60: e.g. with 10 agents on calls, 40 IVR calls can run at the same time."
    Given the call center in its baseline layout
    When the carrier holds 10 agent calls while 41 IVR calls arrive
    Then 10 agent calls are answered and held together
    And 40 IVR calls are answered and held together
    And 1 IVR call is refused with 503
    And the boards held 60 channels at the peak

  @CAP-T1 @target
  Scenario: Target, every caller in IVR self-service: 90 at once, the 91st refused
    Plan 1.1, target environment: "All IVR: at most 90 concurrent callers."
    Given the call center in its target layout
    When the carrier offers 91 IVR calls at once
    Then 90 IVR calls are answered and held together
    And 1 IVR call is refused with 503
    And the boards held 90 channels at the peak

  @CAP-T2 @target
  Scenario: Target, every caller transferred to an agent: 45 at once, the 46th refused
    Plan 1.1, target environment: "All transferred to agents: at most 45 concurrent."
    Given the call center in its target layout
    When the carrier offers 46 agent calls at once
    Then 45 agent calls are answered and held together
    And 1 agent call is refused with 503
    And the seats answered 45 agent legs
    And the boards held 90 channels at the peak

  @CAP-T3 @target
  Scenario: Target mix, each IPC on its own: 10 agent calls and 70 IVR calls all answered
    Plan 1.1, target environment: "the two IPCs are computed separately: one IPC has capacity
    X + 2Y = 60, the other X + 2Y = 30. So with 10 agents on calls, 70 IVR calls can run at once."
    Given the call center in its target layout
    When the carrier holds 10 agent calls while 71 IVR calls arrive
    Then 10 agent calls are answered and held together
    And 70 IVR calls are answered and held together
    And 1 IVR call is refused with 503
    And board board0 held at most 60 channels and board board1 at most 30
    And the boards held 90 channels at the peak
