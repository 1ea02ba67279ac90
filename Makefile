# One command to check, one to test. `make setup` is implied by both.
VENV ?= .venv
BIN := $(VENV)/bin
AD_SCENARIO := tests/scenarios/test_ad_replication.py

.PHONY: setup check test test-vm test-ad scenario-replication scenario-replication-full scenario-replication-ad guest guest-ad demo bench format

setup:
	@scripts/bootstrap

check: setup
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Stage 1 on every core (pytest-xdist): its tests wait on subprocesses and the S3 server.
# A module's tests stay on one worker, in order (tests/conftest.py).
test: setup
	$(BIN)/pytest -q -n auto -m "not vm and not scenario" --durations=15

# Real guests under libvirt (root, QEMU, libvirt; builds the cached guest first).
test-vm: setup guest
	$(BIN)/pytest -q -m "vm and not ad" tests/vm --durations=20

# A two-DC Samba AD domain on real guests (the AD image layered on the base guest;
# the provisioned pair is cached: ~7 min fresh, ~2 min from the cache): the harness and
# item-level restore of a user and an OU. Not in CI, where the AD part of
# scenario-replication (stage 3) restores DC1 naive and aware, brings its lost objects
# back with `surety items samba-ad` and verifies both DCs in the lab, on one pair.
test-ad: setup guest guest-ad
	$(BIN)/pytest -q -m ad tests/vm --durations=20

# Replicated members restored naive vs app-aware, one table (CI's stage 3): PostgreSQL
# and MariaDB pairs, a primary + standby application group verified in the lab, and two
# Samba AD DCs (DC1 restored naive and app-aware from one point, its lost objects
# brought back item by item, both DCs' points verified in order in the lab; 19 min on
# the quiet host with a fresh pair). SURETY_SCENARIO_REPEAT=N runs every case N times.
scenario-replication: setup guest guest-ad
	$(BIN)/pytest -q -m scenario tests/scenarios --durations=20

# The Samba AD part of scenario-replication alone.
scenario-replication-ad: setup guest guest-ad
	$(BIN)/pytest -q -m scenario $(AD_SCENARIO) --durations=20

# Everything: scenario-replication and the second naive ordering of PostgreSQL and
# MariaDB ("restored member writes first").
scenario-replication-full: setup guest guest-ad
	SURETY_SCENARIO_FULL=1 $(BIN)/pytest -q -m scenario tests/scenarios --durations=20

demo: setup
	@scripts/demo

bench: setup
	$(BIN)/python bench/compare.py

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Build (or reuse) the cached Debian test guest for integration tests (root).
guest:
	tests/guests/build.sh

# Build (or reuse) the Samba AD DC guest, an overlay on the base guest (root).
guest-ad:
	tests/guests/build_ad.sh
