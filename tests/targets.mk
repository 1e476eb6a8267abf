# Which tests each test target of the Makefile runs, and what each folder's tests need built first.
# The Makefile includes this file and tests/unit/test_make_targets.py reads it, so it holds only
# comments and plain `NAME := words` lines.
#
# A target runs pytest on its FOLDERS (tests/<folder>), narrowed by its MARKER expression when it
# has one (the markers are declared in pyproject.toml; tests/conftest.py also marks every test
# with its folder's name). Its prerequisites are the project's environment (.venv) and the NEEDS
# of each of its folders: a test file added to a folder runs with what its neighbours need,
# whichever target selects it, at the price of a target sometimes building an environment that
# none of its own tests uses.

# What the tests of each folder use besides .venv, as make targets: yandex-tank's environment
# (unit: its config validator; stack: the shortened seed profile), the Go receiver (stack: checked
# against ours; built here so that its 20 s cold build is not a test's), checkov's, the control
# plane and helm, the Strimzi CRDs. The stack and chaos tests start the local stack themselves, the
# cluster tests the one-node cluster and its images (python -m local.cluster, from kube-tools).
NEEDS_unit := loadtest-env
NEEDS_stack := loadtest-env go-receiver
NEEDS_chaos :=
NEEDS_cluster := kube-tools loadtest-env
NEEDS_kube := kube-tools strimzi-crds checkov-env loadtest-env

# `make test` runs every folder, unnarrowed.
FOLDERS_test := chaos cluster kube stack unit

FOLDERS_test-unit := unit
FOLDERS_test-stack := stack
FOLDERS_test-chaos := chaos
FOLDERS_test-cluster := cluster
FOLDERS_chaos := chaos

# The three-broker scenarios, on a stack of their own (the Makefile's THREE_BROKERS): about
# 6 minutes and a second stack, more than `make test` can spend in its 30; its one broker skips them.
FOLDERS_chaos-brokers := chaos
MARKER_chaos-brokers := brokers

# tests/kube, and the apply command's tests in the other folders.
FOLDERS_test-operator := kube unit stack
MARKER_test-operator := kube or operator

FOLDERS_security-check := unit stack kube
MARKER_security-check := security

FOLDERS_observability-check := unit stack
MARKER_observability-check := observability

FOLDERS_chart-check := kube unit
MARKER_chart-check := chart
