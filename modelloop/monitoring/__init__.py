"""monitoring: drift and quality statistics, the monitoring job, reports, and the retraining trigger."""
