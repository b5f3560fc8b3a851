"""kubepeft's control plane: a kopf operator that turns PeftJobs into gang-scheduled worker pods.

Layout: ``settings`` (environment), ``naming`` (child names, labels), ``render/`` (pure spec ->
Kubernetes objects), ``status`` (conditions, progress mapping), ``lifecycle`` (the pure
decision: observed state -> actions + new status), ``kube`` (API calls), ``reconciler`` (one
reconcile = observe, decide, act), ``handlers`` (thin kopf triggers), ``metrics``, ``main``.
"""
