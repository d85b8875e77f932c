"""The people and the lists: sign-up and confirmation, lists and subscribers as they are read and changed, and
CSV import and export."""
