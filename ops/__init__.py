"""Operations: runbook tools, local servers for development and benchmarks, deployment."""
