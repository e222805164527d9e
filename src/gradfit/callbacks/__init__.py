"""Callbacks: hooks into the Trainer's eager outer loop."""

from gradfit.callbacks.backup import BackupAndRestore
from gradfit.callbacks.base import Callback, CallbackList
from gradfit.callbacks.csv_logger import CSVLogger
from gradfit.callbacks.early_stopping import EarlyStopping
from gradfit.callbacks.history import History
from gradfit.callbacks.lambda_callback import LambdaCallback
from gradfit.callbacks.lr_scheduler import LearningRateScheduler
from gradfit.callbacks.model_checkpoint import ModelCheckpoint
from gradfit.callbacks.monitor import MonitorCallback
from gradfit.callbacks.progress_bar import ProgressBar
from gradfit.callbacks.record_variables import RecordVariables
from gradfit.callbacks.reduce_lr import ReduceLROnPlateau
from gradfit.callbacks.tensorboard import TensorBoard

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "MonitorCallback",
    "ProgressBar",
    "RecordVariables",
    "ReduceLROnPlateau",
    "TensorBoard",
]
