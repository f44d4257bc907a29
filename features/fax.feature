@lab
Feature: Fax sessions on the fax boards (plan 1.1)
  Fax callers offer T.38 (m=image) through the PBX to the fax boards' ports.

  Background:
    Given the call center in its baseline layout

  @FAX-B1 @baseline
  Scenario: Baseline: 4 faxes at once, the 5th refused
    Plan 1.1, current environment: "Fax: at most 4 concurrent fax sessions."
    When the carrier offers 5 fax calls at once
    Then 4 fax calls are answered and held together
    And 1 fax call is refused with 503
    And the fax boards held 4 ports at the peak
