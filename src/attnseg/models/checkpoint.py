"""Former name of :mod:`attnseg.models.model_file` (model files: save, read, verify).

Renamed because "checkpoint" now means only a training checkpoint; this module stays so that
scripts written against earlier releases (``from attnseg.models.checkpoint import read_model_file``)
keep working. New code imports :mod:`attnseg.models.model_file`.
"""

from attnseg.models.model_file import (
    load_model,
    model_from_payload,
    model_payload,
    read_model_file,
    save_model,
    state_dict_digest,
)

__all__ = [
    "load_model",
    "model_from_payload",
    "model_payload",
    "read_model_file",
    "save_model",
    "state_dict_digest",
]
