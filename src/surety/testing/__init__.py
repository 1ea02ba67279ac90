"""Test kit: conformance suites and fakes. Never imported by production code."""
