"""Tests of the test-support package :mod:`kubepeft_testing` (API emulator, fake kubelets)."""
