"""Fault tests: "never silently wrong, never locked out" (real ``surety`` runs)."""
