"""The PeftSweep controller: pure decisions (:mod:`.logic`), API calls (:mod:`.api`), the
reconcile loop (:mod:`.reconciler`) and its kopf handlers (:mod:`.handlers`).

Trials are PeftJobs the sweep owns (controller owner reference with the sweep's uid); the
PeftJob reconciler runs them like any other job. The sweep's decisions are the same functions
``kubepeft run`` uses locally (:func:`kubepeft.sweep.state.decide`).
"""
