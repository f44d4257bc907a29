@lab
Feature: Fax sessions on the fax boards (plan 1.1)
  Fax callers offer T.38 (m=image) through the PBX to the fax boards' ports.

  @FAX-B1 @baseline
  Scenario: Baseline: 4 faxes at once, the 5th refused
    Plan 1.1, current environment: "Fax: at most 4 concurrent fax sessions."
    Given the call center in its baseline layout
    When the carrier offers 5 fax calls at once
    Then 4 fax calls are answered and held together
    And 1 fax call is refused with 503
    And the fax boards held 4 ports at the peak

  @FAX-T1 @target
  Scenario: Target: 8 faxes at once across both IPCs, the 9th refused
    Plan 1.1, target environment: "Fax: at most 8 concurrent fax sessions (depends on how Telecom
    allocates the lines)."
    Given the call center in its target layout
    When the carrier offers 9 fax calls at once
    Then 8 fax calls are answered and held together
    And 1 fax call is refused with 503
    And the fax boards held 8 ports at the peak
