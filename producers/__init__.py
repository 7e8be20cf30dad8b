"""How work gets in: campaign files, recipient readers and the enqueue path."""
