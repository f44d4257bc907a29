@lab
Feature: The SMS and email senders move to Shenzhen, then to the new mail gateway (plan 2.2.5, 3.4)
  The migration's last batch. Shanghai's sender takes the application servers' SMS and email into
  its outbox and sends SMS to the SMS gateway and email through the Exchange service. The plan's
  playbook (playbooks/migration/05_notify.yml, runbook step mig_notify, after the app/DB migration)
  copies Shanghai's program environment to Shenzhen's sender, points the application servers'
  sending channel at it, tests, then moves Shenzhen's email from the Exchange service to the new mail
  gateway. Messages are sent the way the application sends them and counted where they arrive: the
  SMS gateway's count per sender, and the Message-IDs delivered into each mail host's Maildir.

  @MIG-NT1 @MIG-NT2 @migration
  Scenario: The senders are copied to Shenzhen and send from there; Shenzhen's email goes through the new mail gateway
    Plan 2.2.5: "SMS and email senders: like the TA import: copy the Shanghai program environment to
    the Shenzhen server. After migration, once the mail sender is changed, move from the Exchange
    service to the new mail gateway."
    Given the application servers send SMS and email through Shanghai's sender
    When the operators run the SMS/email batch
    Then Shenzhen's sender runs the same program as Shanghai's, with the same configuration but the mail relay
    And the application servers' sending channel names Shenzhen's sender
    And the batch's own test sent SMS from Shenzhen and email through the Exchange service before the change, through the new mail gateway after it
    When the Shenzhen application server sends 10 SMS and 10 emails
    Then the SMS gateway counted 10 SMS, all from sz-notify
    And the new mail gateway delivered the 10 emails, by Message-ID
    And the Exchange service received none of them
    When the operators run the SMS/email batch again
    Then nothing changes

  @POST-NT @post_migration
  Scenario: Shenzhen's sender fails: a configuration change on the application server sends through Shanghai
    Plan 3.4: "SMS and email: the current environment is kept as backup; in an emergency a
    configuration change on the application server switches the sending channel back to Shanghai."
    Given the steady state: the application servers send through Shenzhen's sender and the new mail gateway
    When the nemesis stops the sender on sz-notify
    Then the Shenzhen application server cannot hand its messages over
    When the operators run dr/notify_shanghai.yml
    Then the application servers' sending channel names Shanghai's sender
    When the Shenzhen application server sends 5 SMS and 5 emails
    Then the SMS gateway counted 5 SMS, all from sh-notify
    And the Exchange service delivered the 5 emails, by Message-ID
    And the new mail gateway received none of them
    And after the rollback the application servers send through Shenzhen's sender again
