"""
``make bench``: throughput, memory and delivery-tracking figures of the bulk sender, measured
against the local emulator with 50 ms of added latency.  See docs/performance.md.
"""
