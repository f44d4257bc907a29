@lab
Feature: IPC disaster recovery after the upgrade (plan 1.1, DR principle)
  Two IPCs in parallel: the primary runs the board driver, CTI, IVR, KCXP and KCBP; the secondary
  runs its driver, KCXP and KCBP, with CTI, IVR and a KCXP/KCBP copy installed and stopped. Each
  fault scenario states its steady state first, injects the fault straight into the lab (the
  nemesis: a cut E1 line, a killed process, a hung IPC), runs the operators' procedure from
  playbooks/failover, counts what callers got, and always rolls back: the fault is undone,
  dr7_failback.yml restores the normal arrangement, and the steady state is checked again.

  Background:
    Given the call center in its target layout

  @DR-1 @target
  Scenario: Both IPCs run the same versions and configuration of driver, CTI, IVR, KCXP and KCBP
    Plan 1.1, DR principle: "both IPCs keep the same versions and the same configuration parameters
    of all system software (board drivers, CTI, IVR, KCXP, KCBP, ...)". Keys that are each IPC's own
    (its name, address, its boards' ports and cabled channels, KCXP upstream) are checked by rule.
    Then the parity check finds no difference in the versions and configuration of driver, CTI, IVR, KCXP and KCBP

  @DR-1 @target
  Scenario: The parity check names a configuration parameter that differs on the secondary
    Plan 1.1, DR principle: "both IPCs keep the same versions and the same configuration parameters
    of all system software". The check must name a difference, not only pass when there is none.
    When the nemesis sets heartbeat_ms of the cti configuration on the secondary to 500
    Then the parity check names heartbeat_ms of the cti configuration as the only difference
    And after the rollback the steady state holds again

  @DR-2 @target
  Scenario: Normal operation: CTI and IVR run on the primary only, the secondary's copies are installed and stopped
    Plan 1.1, DR principle: "In normal operation CTI and IVR run on one IPC (the primary). KCXP, KCBP
    and the other components run on the primary and, independently, a second set runs on the other
    IPC (the secondary). ... The secondary has the same CTI and IVR programs deployed as the primary,
    plus a copy of KCXP and KCBP whose IP parameters all point to the secondary itself. In normal
    operation the secondary's CTI, IVR and the KCXP/KCBP copy are not started."
    Then on the primary supervisord shows driver, CTI, IVR, KCXP, KCBP and the fax driver running
    And on the secondary supervisord shows driver, KCXP, KCBP and the fax driver running and CTI, IVR, KCXP copy and KCBP copy stopped
    And the secondary's KCXP copy and KCBP copy point at the secondary itself
    And the secondary's KCXP bridges to the primary's, so the primary's CTI controls every board

  @DR-3 @DR-6 @target @fault_drill
  Scenario Outline: Primary board fault (the nemesis <fault> it): the secondary's board answers, nothing else stops
    Plan 1.1, DR principle: "Primary fails: board line or board driver fault: shut the board driver
    down; all other services keep running." DR-6, derived from 1.1 purpose ("two machines in
    parallel, each a hot standby for the other, so that a single IPC failure does not interrupt call
    service"): the switchover is timed, and the calls in flight on the surviving IPC are not dropped.
    The PBX hunts past the silent board by itself; the procedure then unloads the driver.
    Given the steady state holds: every board controlled, basic calls pass
    And callers in flight: 20 on the primary's board and 10 on the secondary's, held for 60 s
    When the nemesis <fault> the primary's voice board
    And new calls are probed from the fault on
    Then a new call is answered and served again within 1 s of the fault
    When the operators run dr3_primary_board_fault.yml
    Then on the primary supervisord shows KCXP, KCBP, CTI, IVR and the fax driver running and the driver stopped
    And 5 IVR calls at once are all answered by the secondary's board and served by the primary's IVR
    And the calls in flight on the surviving IPC were not dropped, those on the primary's board are counted
    And after the rollback the steady state holds again

    Examples:
      | fault                 |
      | cuts the line of      |

    @full
    Examples:
      | fault                 |
      | crashes the driver of |

  @DR-4 @DR-6 @target @fault_drill
  Scenario Outline: Primary software fault (the nemesis crashes its <program>): the secondary takes over with its own CTI, IVR and the copies
    Plan 1.1, DR principle: "CTI or IVR fault: manually stop all services on the primary; start CTI
    and IVR on the secondary; on the secondary stop KCXP and KCBP and start the KCXP/KCBP copy; all
    inbound calls now run on the secondary." DR-6, derived from 1.1 purpose ("a single IPC failure
    does not interrupt call service"): the switchover is timed from the fault to the first new call
    answered and served by an IVR again, and the calls in flight on the secondary are not dropped.
    Given the steady state holds: every board controlled, basic calls pass
    And callers in flight: 20 on the primary's board and 10 on the secondary's, held for 80 s
    When the nemesis crashes the primary's <program>
    And the operators see the fault
    And the operators run dr4_primary_software_fault.yml while new calls are probed
    Then a new call is answered and served again within 30 s of the fault
    And on the primary supervisord shows nothing running and driver, CTI, IVR, KCXP, KCBP and the fax driver stopped
    And on the secondary supervisord shows driver, CTI, IVR, KCXP copy, KCBP copy and the fax driver running and KCXP and KCBP stopped
    And 5 IVR calls at once are all answered by the secondary's board and served by the secondary's IVR
    And the calls in flight on the surviving IPC were not dropped, those on the primary's board are counted
    And after the rollback the steady state holds again

    Examples:
      | program |
      | CTI     |

    @full
    Examples:
      | program |
      | IVR     |

  @DR-5 @DR-6 @target @fault_drill
  Scenario Outline: Secondary fault (the nemesis <fault> its board): all services on the secondary stopped, the primary answers
    Plan 1.1, DR principle: "Secondary fails: stop all services on the secondary; all inbound calls
    run on the primary." DR-6, derived from 1.1 purpose ("a single IPC failure does not interrupt call
    service"): the switchover is timed, and the calls in flight on the primary are not dropped.
    Given the steady state holds: every board controlled, basic calls pass
    And callers in flight: 20 on the primary's board and 10 on the secondary's, held for 60 s
    When the nemesis <fault> the secondary's voice board
    And new calls are probed from the fault on
    Then a new call is answered and served again within 1 s of the fault
    When the operators run dr5_secondary_fault.yml
    Then on the secondary supervisord shows nothing running and driver, KCXP, KCBP, CTI, IVR, KCXP copy, KCBP copy and the fax driver stopped
    And on the primary supervisord shows driver, CTI, IVR, KCXP, KCBP and the fax driver running
    And 5 IVR calls at once are all answered by the primary's board and served by the primary's IVR
    And the calls in flight on the surviving IPC were not dropped, those on the secondary's board are counted
    And after the rollback the steady state holds again

    Examples:
      | fault                 |
      | crashes the driver of |

    @full
    Examples:
      | fault                 |
      | cuts the line of      |

  @DR-7 @target @fault_drill
  Scenario Outline: Failback after a <mode> restores the target capacity (CAP-T1, CAP-T2, CAP-T3)
    Derived from plan 1.1, purpose ("two machines in parallel, each a hot standby for the other")
    and target environment ("all IVR: at most 90 concurrent callers. All transferred to agents: at
    most 45 concurrent ... with 10 agents on calls, 70 IVR calls can run at once"): after a
    switchover, the failback to normal operation gives the full target capacity back.
    Given the steady state holds: every board controlled, basic calls pass
    When the nemesis <fault>
    And the operators see the fault
    And the operators run <playbook>
    And the fault is repaired and the operators fail back with dr7_failback.yml
    Then on the primary supervisord shows driver, CTI, IVR, KCXP, KCBP and the fax driver running
    And on the secondary supervisord shows driver, KCXP, KCBP and the fax driver running and CTI, IVR, KCXP copy and KCBP copy stopped
    When the carrier offers 91 IVR calls at once
    Then 90 IVR calls are answered and held together
    And 1 IVR call is refused with 503
    When the carrier offers 46 agent calls at once
    Then 45 agent calls are answered and held together
    And 1 agent call is refused with 503
    When the carrier holds 10 agent calls while 70 IVR calls arrive
    Then 10 agent calls are answered and held together
    And 70 IVR calls are answered and held together
    And after the rollback the steady state holds again

    Examples:
      | mode                   | fault                                             | playbook                       |
      | primary software fault | crashes the primary's CTI                         | dr4_primary_software_fault.yml |

    @full
    Examples:
      | mode                   | fault                                             | playbook                       |
      | primary board fault    | cuts the line of the primary's voice board        | dr3_primary_board_fault.yml    |
      | secondary fault        | crashes the driver of the secondary's voice board | dr5_secondary_fault.yml        |

  @CAP-D1 @target @fault_drill
  Scenario Outline: Degraded capacity during a <mode>: <answered> IVR callers at once
    Derived from plan 1.1, DR principle and target environment ("the two IPCs are computed
    separately: one IPC has capacity X + 2Y = 60, the other X + 2Y = 30"): while one IPC's board is
    out, the call center holds what the surviving board holds (expected 30 / 30 / 60 IVR calls).
    Given the steady state holds: every board controlled, basic calls pass
    When the nemesis <fault>
    And the operators see the fault
    And the operators run <playbook>
    And the carrier offers 91 IVR calls at once to what is left of the call center
    Then <answered> IVR calls are answered at once and the other <refused> refused
    And after the rollback the steady state holds again

    Examples:
      | mode                   | fault                                             | playbook                       | answered | refused |
      | primary board fault    | cuts the line of the primary's voice board        | dr3_primary_board_fault.yml    | 30       | 61      |
      | primary software fault | crashes the primary's CTI                         | dr4_primary_software_fault.yml | 30       | 61      |
      | secondary fault        | crashes the driver of the secondary's voice board | dr5_secondary_fault.yml        | 60       | 31      |

  @FAX-D1 @target @fault_drill
  Scenario Outline: With the whole <side> IPC down, 4 faxes at once are still served
    Derived from plan 1.1, preparation: "buy one Dialogic 4-port fax board (so the backup environment
    can keep serving fax in a disaster)". With one IPC down, the other IPC's fax board serves 4
    concurrent faxes; the 5th is refused.
    Given the steady state holds: every board controlled, basic calls pass
    When the nemesis takes the whole <side> IPC down
    And the operators see the fault
    And the operators run <playbook>
    And the carrier offers 5 fax calls at once to what is left of the call center
    Then 4 fax calls are answered at once and the other 1 refused
    And the <survivor>'s fax board held 4 ports at the peak
    And after the rollback the steady state holds again

    Examples:
      | side      | playbook                       | survivor  |
      | primary   | dr4_primary_software_fault.yml | secondary |

    @full
    Examples:
      | side      | playbook                       | survivor  |
      | secondary | dr5_secondary_fault.yml        | primary   |
