@lab
Feature: The web chat moves to Shenzhen; Shanghai's stays as the fallback (plan 2.2.1, 3.2)
  The migration's first batch. Shanghai's web chat (release 1.4.2 on Apache, PHP and MariaDB) serves
  customers under the old domain, linked from the website's home page. The plan's playbook
  (playbooks/migration/01_webchat.yml, runbook step mig_webchat) builds the Shenzhen server with the
  new release, tests the version upgrade on a copy of the current data, then migrates the data,
  enables the new domain and points the website's entry to it. Customers are played from a lab host
  through the website's entry; what each server holds is counted in its database (rows, checksums).

  @MIG-CS1 @MIG-CS2 @migration
  Scenario: The web chat moves to Shenzhen's new release while customers keep chatting
    Plan 2.2.1: "build a new server in Shenzhen, also used to test new requirements and the system's
    version upgrade. Install the OS; deploy apache, mysql, php etc.; copy current data to the new
    server as test data; test new requirements and the version upgrade; enable the new web-chat
    domain, migrate the data, change the website's web-chat entry to the new domain."
    Given Shanghai's web chat serves customers through the website's entry
    When a customer posts 5 messages through the website's web-chat entry
    And the operators run the web-chat batch while customers keep chatting through the entry
    Then sz-chat runs Apache, MariaDB and the PHP application under supervisord
    And the test copy held every Shanghai message with the same checksum
    And the version-upgrade test found release 2.0.0 on schema 2 serving every copied message
    And the new domain resolves to sz-chat from both sites
    And the website's web-chat entry points to the new domain
    And every message of Shanghai is in Shenzhen with the same content, including those written after the test copy
    And every message a customer posted before and during the migration is stored in Shenzhen

  @MIG-CS2 @migration
  Scenario: After the web-chat batch, customers following the website's entry are served by Shenzhen
    Plan 2.2.1: "enable the new web-chat domain, migrate the data, change the website's web-chat entry
    to the new domain." The batch refuses nothing here (it needs no batch before it) and a second run
    only verifies.
    Given the web-chat batch has run
    When a customer follows the website's web-chat entry and posts a message
    Then the new release in Shenzhen answered and stored the message, and Shanghai did not
    When the operators run the web-chat batch again
    Then nothing changes

  @POST-CS @post_migration
  Scenario: Shenzhen's web chat fails: the website's entry goes back to Shanghai's unchanged environment
    Plan 3.2: "Shenzhen gets a new environment; Shanghai's current version is left unchanged. If the
    new system fails, switch back to Shanghai quickly by changing the website's home-page entry."
    Given the steady state: customers following the website's entry are served by Shenzhen
    When the nemesis stops Apache on sz-chat
    Then a customer following the website's entry gets no answer
    When the operators run dr/webchat_shanghai.yml
    Then the website's web-chat entry points to the old domain
    And a customer following the entry is served by Shanghai's release 1.4.2 and the message is stored in Shanghai
    And after the rollback customers following the website's entry are served by Shenzhen again
