"""What comes in from outside: bounce mailboxes (maildir, IMAP, POP3) and their delivery status notifications,
and the webhooks of email providers (SES through SNS, SendGrid, Postmark). Outbound transports are in
`transports/`."""
