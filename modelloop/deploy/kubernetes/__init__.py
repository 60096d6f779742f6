"""The Kubernetes target: pure manifest rendering (`manifests`), the target over the official client
(`target`) and Lease leader election (`leader`). The only modules of modelloop that import `kubernetes`."""
