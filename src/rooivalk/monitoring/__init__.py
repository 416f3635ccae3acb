"""Production drift monitoring: drift checks, the Prometheus exporter, alerts and dashboards."""
