"""Distribution on ``tf.distribute``: replica arithmetic and helpers (never our own comms).

``gf.Trainer(..., strategy=tf.distribute.MirroredStrategy())`` trains on
every replica of a strategy (:mod:`gradfit.training.replicated`); this
package holds what does not depend on the Trainer: :mod:`~.sync`, the
replica-context arithmetic every update rule runs.
"""

from gradfit.distribute.sync import global_batch_size

__all__ = ["global_batch_size"]
