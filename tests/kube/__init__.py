"""Test infrastructure for a real Kubernetes control plane without a kubelet: starting the control plane
(`control_plane`), a node stand-in that runs pods as local processes (`node`), and a kube-proxy stand-in
that routes a Service's connections to its ready endpoints (`proxy`). Nothing here ships with modelloop."""
