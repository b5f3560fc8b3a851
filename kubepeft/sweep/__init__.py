"""Sweeps: the pure logic behind PeftSweep, shared by the operator and the local run.

No torch, no kopf: expansion of parameters into trials (:mod:`.expand`), trial names
(:mod:`.naming`), objective and best trial (:mod:`.objective`), Optuna samplers and the
median-rule pruner with the study rebuilt from the sweep's status (:mod:`.search`), the
status table (:mod:`.state`) and the comparison report (:mod:`.report`).
"""
