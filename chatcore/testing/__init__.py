"""What tests and benchmarks share: a tiny random model, real servers on free ports, report figures."""
