"""Callbacks: hooks into the Trainer's eager outer loop."""

from gradfit.callbacks.base import Callback, CallbackList
from gradfit.callbacks.early_stopping import EarlyStopping
from gradfit.callbacks.history import History
from gradfit.callbacks.lambda_callback import LambdaCallback
from gradfit.callbacks.record_variables import RecordVariables

__all__ = [
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "RecordVariables",
]
