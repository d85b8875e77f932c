"""The rules around consent and deliverability: suppressions, unsubscribing, the rights of the people on the
lists, and the bounce and complaint reports of providers and mail servers."""
