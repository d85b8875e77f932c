"""Sending: issues from draft to sent, and the one composer that turns any email into its message."""
