"""The local stack: the whole pipeline on one machine, for users, tests and CI."""
