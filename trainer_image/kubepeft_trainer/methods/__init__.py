"""PEFT methods behind one interface (:class:`~kubepeft_trainer.methods.base.PeftMethod`).

``get_method(spec)`` imports ``kubepeft_trainer.methods.<snake_case(spec.method)>`` and takes its
``METHOD``: adding a method is adding one module.
"""

from kubepeft_trainer.methods.base import PeftMethod, get_method

__all__ = ["PeftMethod", "get_method"]
