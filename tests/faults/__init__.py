"""Fault-injection harness: a faulty HTTP proxy, browser-like clients, restartable collector
processes and the verdict that counts acknowledged uploads against what the store holds.

The small scenarios in ``tests/test_fault_scenarios.py`` and the large ones in
``bench/reliability.py`` both run ``scenarios.run_scenario``.
"""
